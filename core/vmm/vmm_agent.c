/* The VMM's side of the guest agent (see vmm_priv.h): the virtio-console port's host end feeds
 * core/agent/qga.c, and the uses around it: freeze and thaw around a snapshot take, the clock
 * after resume and revert, a clean shutdown, the guest's OS name. The one rule: nothing here
 * holds vmm.lock while waiting for the guest (the port's bytes go out under it, which never
 * waits); every wait is qga_call's, bounded. Work that follows an event (the OS name when an
 * agent opens the port, the clock after a resume) runs on the agent's own thread. */
#include "core/agent/qga.h"
#include "core/vmm/vmm_priv.h"

#define OSINFO_TIMEOUT_MS 3000
#define CLOCK_TIMEOUT_MS 3000
#define FREEZE_TIMEOUT_MS 10000

static int agent_send(void *opaque, const void *buf, size_t len)
{
    struct vmm *v = opaque;
    pthread_mutex_lock(&v->lock);
    int r = v->machine_live && v->vcon ? virtio_console_write(v->vcon, buf, len) : -ENOTCONN;
    pthread_mutex_unlock(&v->lock);
    return r;
}

/* The device's callbacks (its I/O thread, transport lock held): never wait. */
static void port_data(void *opaque, const uint8_t *buf, size_t len)
{
    struct vmm *v = opaque;
    if (v->agent.qga) /* NULL: the client never started */
        qga_receive(v->agent.qga, buf, len);
}

static void port_open(void *opaque, bool open)
{
    struct vmm *v = opaque;
    struct vmm_agent *a = &v->agent;
    if (!a->qga)
        return;
    qga_set_connected(a->qga, open);
    pthread_mutex_lock(&a->lock);
    a->os[0] = '\0';
    a->want_osinfo = open;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
    vmm_log("guest agent: %s the port",
            open ? "a program in the guest opened" : "the guest closed");
}

const struct virtio_console_host vmm_agent_port = {.data = port_data, .open = port_open};

int vmm_agent_call(struct vmm *v, const char *cmd, json_t *args, unsigned timeout_ms, bool no_reply,
                   json_t **ret, char *err, size_t errlen)
{
    if (!v->agent.qga) {
        json_decref(args);
        snprintf(err, errlen, "no guest agent (the VMM could not start its client)");
        return -ENOTCONN;
    }
    return qga_call(v->agent.qga, cmd, args, timeout_ms, no_reply, ret, err, errlen);
}

int vmm_agent_set_time(struct vmm *v, char *err, size_t errlen)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    json_int_t ns = (json_int_t)now.tv_sec * 1000000000 + now.tv_nsec;
    return vmm_agent_call(v, "guest-set-time", json_pack("{s:I}", "time", ns), CLOCK_TIMEOUT_MS,
                          false, NULL, err, errlen);
}

int vmm_agent_freeze(struct vmm *v, char *err, size_t errlen)
{
    json_t *ret = NULL;
    int r = vmm_agent_call(v, "guest-fsfreeze-freeze", NULL, FREEZE_TIMEOUT_MS, false, &ret, err,
                           errlen);
    if (r == 0)
        vmm_log("guest agent: froze %lld file system(s)", (long long)json_integer_value(ret));
    json_decref(ret);
    return r;
}

int vmm_agent_thaw(struct vmm *v, char *err, size_t errlen)
{
    json_t *ret = NULL;
    int r =
        vmm_agent_call(v, "guest-fsfreeze-thaw", NULL, FREEZE_TIMEOUT_MS, false, &ret, err, errlen);
    if (r < 0)
        vmm_log("guest agent: cannot thaw the guest's file systems: %s", err);
    json_decref(ret);
    return r;
}

/* After a revert: a state taken while frozen comes back frozen (the take froze it). */
int vmm_agent_after_revert(struct vmm *v, char *err, size_t errlen)
{
    json_t *st = NULL;
    int r =
        vmm_agent_call(v, "guest-fsfreeze-status", NULL, CLOCK_TIMEOUT_MS, false, &st, err, errlen);
    if (r == 0 && json_is_string(st) && strcmp(json_string_value(st), "frozen") == 0)
        r = vmm_agent_thaw(v, err, errlen);
    json_decref(st);
    return r < 0 ? r : vmm_agent_set_time(v, err, errlen);
}

void vmm_agent_resync_clock_async(struct vmm *v, const char *why)
{
    struct vmm_agent *a = &v->agent;
    if (!a->started)
        return;
    pthread_mutex_lock(&a->lock);
    a->want_clock = why;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

bool vmm_agent_os(struct vmm *v, char *os, size_t oslen)
{
    struct vmm_agent *a = &v->agent;
    os[0] = '\0';
    if (!a->started)
        return false;
    pthread_mutex_lock(&a->lock);
    bool known = a->os[0];
    snprintf(os, oslen, "%s", a->os);
    pthread_mutex_unlock(&a->lock);
    return known;
}

static void fetch_osinfo(struct vmm *v)
{
    char err[256], os[sizeof(v->agent.os)] = "";
    json_t *ret = NULL;
    /* An agent that just opened its port may still be starting: a few tries. */
    int r = -1;
    for (int i = 0; i < 3 && r < 0 && qga_connected(v->agent.qga); i++)
        r = vmm_agent_call(v, "guest-get-osinfo", NULL, OSINFO_TIMEOUT_MS, false, &ret, err,
                           sizeof(err));
    if (r < 0) {
        vmm_log("guest agent: no OS name: %s", err);
        return;
    }
    const char *pretty = json_string_value(json_object_get(ret, "pretty-name"));
    const char *name = json_string_value(json_object_get(ret, "name"));
    const char *version = json_string_value(json_object_get(ret, "version"));
    if (pretty)
        snprintf(os, sizeof(os), "%s", pretty);
    else
        snprintf(os, sizeof(os), "%s%s%s", name ? name : "unknown OS", version ? " " : "",
                 version ? version : "");
    json_decref(ret);
    pthread_mutex_lock(&v->agent.lock);
    snprintf(v->agent.os, sizeof(v->agent.os), "%s", os);
    pthread_mutex_unlock(&v->agent.lock);
    vmm_log("guest agent: the guest runs %s", os);
}

static void *agent_thread(void *arg)
{
    struct vmm *v = arg;
    struct vmm_agent *a = &v->agent;
    pthread_setname_np(pthread_self(), "vmws-agent");
    pthread_mutex_lock(&a->lock);
    while (!a->stop) {
        if (a->want_osinfo) {
            a->want_osinfo = false;
            pthread_mutex_unlock(&a->lock);
            fetch_osinfo(v);
            pthread_mutex_lock(&a->lock);
        } else if (a->want_clock) {
            const char *why = a->want_clock;
            a->want_clock = NULL;
            pthread_mutex_unlock(&a->lock);
            char err[256];
            if (vmm_agent_set_time(v, err, sizeof(err)) == 0)
                vmm_log("guest agent: clock set to the host's after %s", why);
            else
                vmm_log("guest agent: clock not set after %s: %s", why, err);
            pthread_mutex_lock(&a->lock);
        } else {
            pthread_cond_wait(&a->cond, &a->lock);
        }
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

int vmm_agent_start(struct vmm *v)
{
    struct vmm_agent *a = &v->agent;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    a->qga = qga_create(agent_send, v);
    if (!a->qga || pthread_create(&a->thread, NULL, agent_thread, v) != 0) {
        qga_destroy(a->qga);
        a->qga = NULL;
        return -ENOMEM;
    }
    a->started = true;
    return 0;
}

void vmm_agent_stop(struct vmm *v)
{
    struct vmm_agent *a = &v->agent;
    if (!a->started)
        return;
    pthread_mutex_lock(&a->lock);
    a->stop = true;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
    qga_set_connected(a->qga, false); /* a call in flight returns now */
    pthread_join(a->thread, NULL);
    qga_destroy(a->qga);
    a->qga = NULL;
    a->started = false;
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
}
