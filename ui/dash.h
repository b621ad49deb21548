/* The dashboard's shared state and the interface every panel implements (like htop's
 * meters): a title, whether it takes focus, draw() into a rectangle from the model, and
 * key() for the keys it understands when focused. The one idea: panels only read the model
 * and ask for actions through dash_run_action(); they never gather figures or run commands
 * themselves. */
#ifndef VMWS_UI_DASH_H
#define VMWS_UI_DASH_H

#include <stdbool.h>

#include "ui/conview.h"
#include "ui/draw.h"
#include "ui/jobs.h"
#include "ui/model.h"

struct dash;

struct panel {
    const char *title;
    bool focusable;
    void (*draw)(struct dash *d, const struct rect *r, bool focused);
    /* Returns true if the key was handled. */
    bool (*key)(struct dash *d, int key);
};

extern const struct panel panel_vms, panel_memory, panel_host, panel_snapshots, panel_console;

enum panel_id { PANEL_VMS, PANEL_MEMORY, PANEL_HOST, PANEL_SNAPSHOTS, PANEL_CONSOLE, PANEL_COUNT };

enum prompt_kind {
    PROMPT_NONE,
    PROMPT_TAKE,   /* snapshot label */
    PROMPT_NEW,    /* "NAME [MEMORY [CPUS]]" */
    PROMPT_DELETE, /* y/n: delete the highlighted snapshot */
    PROMPT_STOP,   /* y/n: power the selected VM off */
    PROMPT_BALLOON, /* SIZE the guest is asked to give back */
};

struct dash {
    struct dash_model model;
    char selected[64];         /* selected VM's name */
    char select_when_seen[64]; /* select this VM once it exists (after n) */
    size_t vm_cursor;          /* index in model.vms */
    size_t vm_top;             /* first VM row shown */
    size_t snap_cursor;        /* index in the selected VM's snapshot rows */
    size_t snap_top;
    enum panel_id focus;
    struct conview console;
    struct job jobs[JOBS_MAX];
    char message[512];
    int message_role; /* ROLE_NORMAL, ROLE_OK, ROLE_ERROR */
    enum prompt_kind prompt;
    char prompt_question[256];
    char prompt_input[128];
    char prompt_vm[64];
    char prompt_label[64];
    bool help;
    int help_top; /* first help line shown */
    bool quit;
    int64_t last_list_ms;
    struct rect rects[PANEL_COUNT];
};

/* The selected VM, or NULL when there are none. */
struct dash_vm *dash_selected(struct dash *d);
/* Runs `vmws ARGV...` as a user action (progress in the message line); THEN (may be NULL) is
 * run after it succeeds. Refuses while another action is running. */
void dash_run_action(struct dash *d, const char *desc, const char *const *argv,
                     const char *const *then, const char *then_desc);
void dash_message(struct dash *d, int role, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Selects VM index I (reattaches the console, reloads snapshots). */
void dash_select(struct dash *d, size_t i);

#endif
