/* The SDL2 window, on a thread of its own that owns every SDL call. It sleeps in
 * SDL_WaitEvent: other threads only post "rows changed" (coalesced into one pending band and
 * at most one queued event) or "title changed", so a still screen wakes it never. The window
 * scales the guest screen (letterboxed), closing it leaves the VM running, Ctrl+Alt+G grabs
 * and releases keyboard and mouse (a click in the window grabs too). */
#include <SDL2/SDL.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util/log.h"
#include "display/display_priv.h"

struct sdl_view {
    struct display *d;
    pthread_t thread;
    pthread_mutex_t lock; /* guards the pending band and flags below */
    pthread_cond_t cond;
    unsigned pend_y0, pend_y1; /* rows waiting to be drawn; y0 == y1: none */
    bool event_queued, title_queued;
    bool ready, failed;
    char error[256];
    atomic_bool open;
    Uint32 ev_update, ev_title, ev_quit;

    SDL_Window *win;
    SDL_Renderer *ren;
    SDL_Texture *tex;
    bool grabbed;
};

static void set_title(struct sdl_view *s)
{
    char state[32], title[256];
    pthread_mutex_lock(&s->d->lock);
    snprintf(state, sizeof(state), "%s", s->d->state);
    pthread_mutex_unlock(&s->d->lock);
    snprintf(title, sizeof(title), "vmws: %s (%s) - %s", s->d->cfg.vm_name, state,
             s->grabbed ? "Ctrl+Alt+G releases" : "Ctrl+Alt+G or click grabs");
    SDL_SetWindowTitle(s->win, title);
}

static void draw(struct sdl_view *s, unsigned y0, unsigned y1)
{
    if (y0 < y1) {
        SDL_Rect r = {0, (int)y0, (int)s->d->width, (int)(y1 - y0)};
        SDL_UpdateTexture(s->tex, &r, s->d->fb + (size_t)y0 * s->d->stride, (int)s->d->stride);
    }
    SDL_RenderClear(s->ren);
    SDL_RenderCopy(s->ren, s->tex, NULL, NULL);
    SDL_RenderPresent(s->ren);
}

static void set_grab(struct sdl_view *s, bool on)
{
    s->grabbed = on;
    SDL_SetWindowGrab(s->win, on ? SDL_TRUE : SDL_FALSE);
    SDL_SetRelativeMouseMode(on ? SDL_TRUE : SDL_FALSE);
    set_title(s);
}

static unsigned sdl_buttons(Uint32 state)
{
    return (state & SDL_BUTTON_LMASK ? 1u : 0) | (state & SDL_BUTTON_RMASK ? 2u : 0) |
           (state & SDL_BUTTON_MMASK ? 4u : 0);
}

static void handle_key(struct sdl_view *s, const SDL_KeyboardEvent *k)
{
    /* The modifiers when the key went down, not now: SDL_GetModState() has already seen the
     * releases queued behind this event, and on a busy machine Ctrl+Alt+G would type a g. */
    SDL_Keymod mod = (SDL_Keymod)k->keysym.mod;
    if (k->keysym.scancode == SDL_SCANCODE_G && (mod & KMOD_CTRL) && (mod & KMOD_ALT)) {
        if (k->type == SDL_KEYDOWN && !k->repeat)
            set_grab(s, !s->grabbed);
        return;
    }
    /* Repeats are sent as further makes, as a PS/2 keyboard's typematic does. */
    display_key_usb(s->d, (unsigned)k->keysym.scancode, k->type == SDL_KEYDOWN);
}

/* Returns false when the window was closed. */
static bool handle_event(struct sdl_view *s, const SDL_Event *e)
{
    if (e->type == s->ev_update) {
        pthread_mutex_lock(&s->lock);
        unsigned y0 = s->pend_y0, y1 = s->pend_y1;
        s->pend_y0 = s->pend_y1 = 0;
        s->event_queued = false;
        pthread_mutex_unlock(&s->lock);
        draw(s, y0, y1);
        /* Take in the keyboard and mouse before the next frame: while the screen changes our
         * own update events keep the queue busy, and input would wait behind them. */
        SDL_PumpEvents();
        return true;
    }
    if (e->type == s->ev_title) {
        pthread_mutex_lock(&s->lock);
        s->title_queued = false;
        pthread_mutex_unlock(&s->lock);
        set_title(s);
        return true;
    }
    if (e->type == s->ev_quit)
        return false;
    switch (e->type) {
    case SDL_QUIT:
        return false;
    case SDL_WINDOWEVENT:
        if (e->window.event == SDL_WINDOWEVENT_CLOSE)
            return false;
        if (e->window.event == SDL_WINDOWEVENT_EXPOSED ||
            e->window.event == SDL_WINDOWEVENT_SIZE_CHANGED)
            draw(s, 0, 0);
        if (e->window.event == SDL_WINDOWEVENT_FOCUS_LOST && s->grabbed)
            set_grab(s, false);
        break;
    case SDL_KEYDOWN:
    case SDL_KEYUP:
        handle_key(s, &e->key);
        break;
    case SDL_MOUSEMOTION:
        if (s->grabbed)
            display_mouse(s->d, e->motion.xrel, e->motion.yrel, 0, sdl_buttons(e->motion.state));
        break;
    case SDL_MOUSEBUTTONDOWN:
    case SDL_MOUSEBUTTONUP:
        if (!s->grabbed) {
            if (e->type == SDL_MOUSEBUTTONDOWN)
                set_grab(s, true);
            break;
        }
        display_mouse(s->d, 0, 0, 0, sdl_buttons(SDL_GetMouseState(NULL, NULL)));
        break;
    case SDL_MOUSEWHEEL:
        if (s->grabbed)
            display_mouse(s->d, 0, 0, -e->wheel.y, sdl_buttons(SDL_GetMouseState(NULL, NULL)));
        break;
    }
    return true;
}

static bool open_window(struct sdl_view *s)
{
    SDL_SetHint(SDL_HINT_NO_SIGNAL_HANDLERS, "1");
    SDL_SetHint(SDL_HINT_VIDEO_X11_NET_WM_BYPASS_COMPOSITOR, "0");
    SDL_SetHint(SDL_HINT_RENDER_SCALE_QUALITY, "linear");
    /* In the KVM box a window is Xvfb's and OpenGL is llvmpipe under emulation, seconds per
     * frame: SDL's software renderer is far cheaper there. $SDL_RENDER_DRIVER still wins. */
    if (getenv("VMWS_IN_BOX"))
        SDL_SetHintWithPriority(SDL_HINT_RENDER_DRIVER, "software", SDL_HINT_DEFAULT);
    if (SDL_Init(SDL_INIT_VIDEO) < 0) {
        snprintf(s->error, sizeof(s->error), "%s", SDL_GetError());
        return false;
    }
    Uint32 base = SDL_RegisterEvents(3);
    if (base == (Uint32)-1) {
        snprintf(s->error, sizeof(s->error), "no SDL user events left");
        return false;
    }
    s->ev_update = base;
    s->ev_title = base + 1;
    s->ev_quit = base + 2;
    s->win = SDL_CreateWindow("vmws", SDL_WINDOWPOS_UNDEFINED, SDL_WINDOWPOS_UNDEFINED,
                              (int)s->d->width, (int)s->d->height, SDL_WINDOW_RESIZABLE);
    if (s->win)
        s->ren = SDL_CreateRenderer(s->win, -1, SDL_RENDERER_PRESENTVSYNC);
    if (s->win && !s->ren)
        s->ren = SDL_CreateRenderer(s->win, -1, 0);
    if (s->ren) {
        SDL_RenderSetLogicalSize(s->ren, (int)s->d->width, (int)s->d->height);
        s->tex = SDL_CreateTexture(s->ren, SDL_PIXELFORMAT_RGB888, SDL_TEXTUREACCESS_STREAMING,
                                   (int)s->d->width, (int)s->d->height);
    }
    if (!s->tex) {
        snprintf(s->error, sizeof(s->error), "%s", SDL_GetError());
        return false;
    }
    SDL_RendererInfo info;
    if (SDL_GetRendererInfo(s->ren, &info) == 0)
        vmm_log("display: SDL window (%s, renderer %s)", SDL_GetCurrentVideoDriver(), info.name);
    set_title(s);
    draw(s, 0, s->d->height);
    return true;
}

static void close_window(struct sdl_view *s)
{
    if (s->tex)
        SDL_DestroyTexture(s->tex);
    if (s->ren)
        SDL_DestroyRenderer(s->ren);
    if (s->win)
        SDL_DestroyWindow(s->win);
    s->tex = NULL;
    s->ren = NULL;
    s->win = NULL;
}

static void *sdl_main(void *arg)
{
    struct sdl_view *s = arg;
    bool ok = open_window(s);
    pthread_mutex_lock(&s->lock);
    s->ready = true;
    s->failed = !ok;
    if (ok)
        atomic_store(&s->open, true);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (ok) {
        display_wake(s->d);
        SDL_Event e;
        while (SDL_WaitEvent(&e))
            if (!handle_event(s, &e))
                break;
        atomic_store(&s->open, false);
        vmm_log("display: SDL window closed (the VM keeps running)");
    }
    close_window(s);
    SDL_Quit();
    return NULL;
}

static struct sdl_view *sdl_view_start(struct display *d, char *err, size_t errlen)
{
    if (!getenv("DISPLAY") && !getenv("WAYLAND_DISPLAY")) {
        snprintf(err, errlen, "neither DISPLAY nor WAYLAND_DISPLAY is set");
        return NULL;
    }
    struct sdl_view *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->d = d;
    atomic_init(&s->open, false);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    int r = pthread_create(&s->thread, NULL, sdl_main, s);
    if (r) {
        snprintf(err, errlen, "cannot start the SDL thread: %s", strerror(r));
        free(s);
        return NULL;
    }
    pthread_setname_np(s->thread, "vmws-sdl");
    pthread_mutex_lock(&s->lock);
    while (!s->ready)
        pthread_cond_wait(&s->cond, &s->lock);
    bool failed = s->failed;
    pthread_mutex_unlock(&s->lock);
    if (failed) {
        snprintf(err, errlen, "%s", s->error);
        pthread_join(s->thread, NULL);
        free(s);
        return NULL;
    }
    return s;
}

static void post(Uint32 type)
{
    SDL_Event e;
    memset(&e, 0, sizeof(e));
    e.type = type;
    SDL_PushEvent(&e);
}

static void sdl_view_update(struct sdl_view *s, unsigned y0, unsigned y1)
{
    if (!atomic_load(&s->open))
        return;
    pthread_mutex_lock(&s->lock);
    if (s->pend_y0 == s->pend_y1) {
        s->pend_y0 = y0;
        s->pend_y1 = y1;
    } else {
        if (y0 < s->pend_y0)
            s->pend_y0 = y0;
        if (y1 > s->pend_y1)
            s->pend_y1 = y1;
    }
    bool need = !s->event_queued;
    s->event_queued = true;
    pthread_mutex_unlock(&s->lock);
    if (need)
        post(s->ev_update);
}

static void sdl_view_title(struct sdl_view *s)
{
    if (!atomic_load(&s->open))
        return;
    pthread_mutex_lock(&s->lock);
    bool need = !s->title_queued;
    s->title_queued = true;
    pthread_mutex_unlock(&s->lock);
    if (need)
        post(s->ev_title);
}

static bool sdl_view_open(struct sdl_view *s)
{
    return atomic_load(&s->open);
}

static void sdl_view_stop(struct sdl_view *s)
{
    post(s->ev_quit); /* harmless if the window is already closed */
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

const struct sdl_ops vmws_module_sdl = {
    .start = sdl_view_start,
    .update = sdl_view_update,
    .title = sdl_view_title,
    .open = sdl_view_open,
    .stop = sdl_view_stop,
};
