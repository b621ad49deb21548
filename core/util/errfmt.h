/* How a function tells its caller what failed: it formats a message into the caller's buffer
 * ERR (ERRLEN bytes; NULL or 0 when the caller wants none) and returns a negative errno, in one
 * statement: `return err_set(err, errlen, -EINVAL, "%s: not a qcow2 image", path);`. */
#ifndef VMWS_ERRFMT_H
#define VMWS_ERRFMT_H

#include <stddef.h>

/* Formats FMT into ERR and returns CODE. */
int err_set(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* For a failed system call: formats FMT followed by ": " and strerror(errno) into ERR and
 * returns -errno, errno being read on entry (and left as it was). */
int err_set_errno(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
