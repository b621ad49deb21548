/* Loading vmws's backend modules (see module.h). */
#include "core/vmm/module.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef VMWS_PKGLIBDIR
#define VMWS_PKGLIBDIR "/usr/local/lib/vmws"
#endif

static pthread_mutex_t module_lock = PTHREAD_MUTEX_INITIALIZER;

static void *open_module(const char *name, char *err, size_t errlen)
{
    char dirs[3][PATH_MAX] = {"", "", VMWS_PKGLIBDIR};
    const char *env = getenv("VMWS_MODULE_DIR");
    if (env && *env)
        snprintf(dirs[0], sizeof(dirs[0]), "%s", env);
    ssize_t n = readlink("/proc/self/exe", dirs[1], sizeof(dirs[1]) - 1);
    if (n > 0) {
        dirs[1][n] = '\0';
        char *slash = strrchr(dirs[1], '/');
        if (slash)
            *slash = '\0';
    } else {
        dirs[1][0] = '\0';
    }
    const char *first_error = NULL;
    for (size_t i = 0; i < 3; i++) {
        char path[PATH_MAX + 64];
        if (!dirs[i][0])
            continue;
        if (snprintf(path, sizeof(path), "%s/vmws-%s.so", dirs[i], name) >= (int)sizeof(path) ||
            access(path, F_OK) < 0)
            continue;
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h)
            return h;
        if (!first_error)
            first_error = dlerror();
        if (snprintf(err, errlen, "cannot load %s: %s", path, first_error ? first_error : "?") < 0)
            err[0] = '\0';
        return NULL;
    }
    if (snprintf(err, errlen, "no vmws-%s.so in %s%s%s or %s (reinstall vmws)", name,
                 dirs[0][0] ? dirs[0] : "", dirs[0][0] ? ", " : "", dirs[1], VMWS_PKGLIBDIR) < 0)
        err[0] = '\0';
    return NULL;
}

const void *vmws_module(const char *name, char *err, size_t errlen)
{
    pthread_mutex_lock(&module_lock);
    /* dlopen counts references: a second load of the same module returns the same handle,
     * and modules are never unloaded (their threads may outlive a caller's interest). */
    void *h = open_module(name, err, errlen);
    const void *ops = NULL;
    if (h) {
        char sym[64];
        snprintf(sym, sizeof(sym), "vmws_module_%s", name);
        ops = dlsym(h, sym);
        if (!ops)
            snprintf(err, errlen, "vmws-%s.so has no %s: a module of another vmws version?", name,
                     sym);
    }
    pthread_mutex_unlock(&module_lock);
    return ops;
}
