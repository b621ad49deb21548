/* Commands the dashboard runs as child processes: every action is the same `vmws ...`
 * command a user or script would type (fork/exec of /proc/self/exe), and slow queries
 * (`vmws list --json`, `vmws snapshot list`) run the same way so the screen never waits.
 * The one idea: the main loop polls each job's stdout/stderr pipes with the keyboard; a job is
 * finished when both pipes reached EOF and the child was reaped. No curses here. */
#ifndef VMWS_UI_JOBS_H
#define VMWS_UI_JOBS_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define JOB_ARGS_MAX 12
#define JOBS_MAX 8

enum job_kind {
    JOB_ACTION,    /* a user's action: progress and result in the message line */
    JOB_LIST,      /* vmws list --json: states of VMs without a VMM */
    JOB_SNAPSHOTS, /* vmws snapshot list NAME --json */
};

struct job {
    bool used;
    enum job_kind kind;
    pid_t pid;
    int out_fd, err_fd; /* -1 once at EOF */
    char *out;          /* stdout, NUL-terminated */
    size_t out_len, out_cap;
    char err[4096]; /* stderr (the first 4 KiB) */
    size_t err_len;
    int status; /* exit status once done (128+N for a signal) */
    bool done;
    int64_t started_ms;
    char vm[64];
    char desc[160];               /* "suspending default" */
    char then[JOB_ARGS_MAX][128]; /* a command to run after this one succeeds ("" = none) */
    char then_desc[160];
};

/* Starts `vmws ARGV...` (NULL-terminated) in slot J. Returns 0 or -errno. */
int job_start(struct job *j, enum job_kind kind, const char *vm, const char *desc,
              const char *const *argv);
/* Adds J's open pipes to PFD (returns how many were added). */
int job_pollfds(const struct job *j, struct pollfd *pfd);
/* Reads whatever J's pipes have; reaps the child once both are at EOF. Returns true when J
 * has just finished. */
bool job_service(struct job *j);
/* Kills (SIGTERM) and reaps a job that is still running; frees its buffers. */
void job_release(struct job *j);
/* The last non-empty line of stderr (or stdout) - what to show in the message line. */
void job_message(const struct job *j, char *buf, size_t len);

#endif
