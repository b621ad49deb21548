/* Control-socket requests: the input is what one client sends, lines of JSON handled by the
 * server's own framing, parsing and dispatch (ctl_handle_bytes, no socket) against the VMM's
 * command table, on a VMM whose machine is not running (so each command checks its arguments and
 * refuses, or answers from an empty snapshot tree). query-memory is left out: it reads the
 * process's /proc smaps (slow under ASan) and nothing of the input. Every reply must be a line of
 * JSON, an object with "return" or "error". */
#include <sys/eventfd.h>
#include <sys/stat.h>

#include "core/vmm/vmm_priv.h"
#include "tests/fuzz/fuzz.h"

static struct ctl_command cmds[32];
static size_t ncmds;
static struct vm_config cfg;
static struct vm_paths paths;

static void vmm_setup(struct vmm *v)
{
    memset(v, 0, sizeof(*v));
    v->cfg = &cfg;
    v->paths = &paths;
    pthread_mutex_init(&v->lock, NULL);
    v->state = VMM_SHUTDOWN;
    v->quit_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    clock_gettime(CLOCK_MONOTONIC, &v->started);
    char err[256];
    v->fb = framebuffer_create(640, 480, err, sizeof(err));
    snprintf(v->tree.dir, sizeof(v->tree.dir), "%s/snapshots", fuzz_dir());
    mkdir(v->tree.dir, 0700);
    v->tree.next_id = 1;
    v->tree_ok = true;
    if (v->quit_fd < 0 || !v->fb)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct vmm v;
    if (!ncmds) {
        vmconfig_defaults(&cfg, "fuzz");
        if (paths_for_vm("fuzz", &paths) < 0)
            abort();
        for (size_t i = 0; i < vmm_ncommands && ncmds < 32; i++)
            if (strcmp(vmm_commands[i].name, "query-memory") != 0)
                cmds[ncmds++] = vmm_commands[i];
        vmm_setup(&v);
    }
    size_t len;
    char *out = ctl_handle_bytes(cmds, ncmds, &v, (const char *)data, size, &len);
    if (!out)
        return 0;
    if (strlen(out) != len)
        abort(); /* a NUL inside a reply */
    for (char *line = out, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl)
            abort(); /* every reply ends its line */
        json_error_t jerr;
        json_t *reply = json_loadb(line, (size_t)(nl - line), 0, &jerr);
        if (!json_is_object(reply) ||
            !(json_object_get(reply, "return") || json_is_object(json_object_get(reply, "error"))))
            abort();
        json_decref(reply);
    }
    free(out);
    return 0;
}
