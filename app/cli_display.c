/* What the command line says about a VM's screen: `vmws start` prints where VNC listens and
 * `vmws status` shows it, both from the VMM's query-display; `vmws vnc-password` sets the
 * VM's VNC password file. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "app/cli.h"
#include "core/config/dconfig.h"
#include "core/util/fsutil.h"

json_t *cli_display_query(const struct vm_paths *p)
{
    return cli_vm_ask(p, "query-display");
}

int cli_random_password(char *out, size_t len)
{
    static const char alphabet[] = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    const unsigned n = sizeof(alphabet) - 1, limit = 256 / n * n; /* bytes below it: uniform */
    for (size_t i = 0; i < len;) {
        uint8_t rnd[32];
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
            return -EIO;
        for (size_t k = 0; k < sizeof(rnd) && i < len; k++)
            if (rnd[k] < limit)
                out[i++] = alphabet[rnd[k] % n];
    }
    out[len] = '\0';
    return 0;
}

int cli_vnc_password_generate(const char *dir, char *out)
{
    int r = cli_random_password(out, 8);
    if (r < 0)
        return r;
    out[8] = '\n';
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/vnc.passwd", dir);
    r = fs_write_atomic(path, out, 9); /* mode 0600, like every temporary file */
    out[8] = '\0';
    return r;
}

void cli_display_print(const struct vm_paths *p, const char *prefix)
{
    json_t *r = cli_display_query(p);
    if (!r)
        return;
    json_t *vnc = json_object_get(r, "vnc");
    printf("%sdisplay:         %dx%d, SDL window %s\n", prefix,
           (int)json_integer_value(json_object_get(r, "width")),
           (int)json_integer_value(json_object_get(r, "height")),
           json_is_true(json_object_get(r, "sdl")) ? "open" : "not open");
    const char *sock = json_string_value(json_object_get(vnc, "socket"));
    if (sock) /* vnc_listen = unix */
        printf("%svnc:             unix socket %s (only you can open it)%s\n", prefix, sock,
               json_is_true(json_object_get(vnc, "password")) ? ", password required" : "");
    else if (vnc)
        printf("%svnc:             %s:%d (display :%d)%s\n", prefix,
               json_string_value(json_object_get(vnc, "host")),
               (int)json_integer_value(json_object_get(vnc, "port")),
               (int)json_integer_value(json_object_get(vnc, "port")) - 5900,
               json_is_true(json_object_get(vnc, "password")) ? ", password required" : "");
    const char *pwfile = json_string_value(json_object_get(vnc, "password_file"));
    char pw[16] = "";
    if (pwfile && pwfile[0])
        display_read_password(pwfile, pw, sizeof(pw));
    if (pw[0])
        printf("%svnc password:    %s (%s)\n", prefix, pw, pwfile);
    json_decref(r);
}

/* `vmws vnc-password NAME [--clear]`: the first line of stdin becomes the VM's VNC password
 * (DIR/vnc.passwd, mode 0600, written atomically); --clear removes it. Read at the next start. */
int cmd_vnc_password(int argc, char **argv)
{
    static const struct option opts[] = {
        {"clear", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool clear = false;
    int c;
    while ((c = cli_getopt(argc, argv, opts)) != -1) {
        if (c == 'h')
            return cli_print_help(argv[0]);
        if (c != 'c')
            return EXIT_USAGE;
        clear = true;
    }
    int rc = cli_positional(argc, argv, 1, "the VM's NAME");
    if (rc)
        return rc;
    const char *name = argv[optind];
    struct vm_paths p;
    if (cli_vm_open(name, &p, NULL))
        return 1;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/vnc.passwd", p.dir);
    if (clear) {
        if (unlink(path) < 0 && errno != ENOENT)
            return cli_error("cannot remove %s: %s", path, strerror(errno));
        printf("VNC password of %s removed (from its next start)\n", name);
        return 0;
    }
    bool tty = isatty(0);
    struct termios old, quiet;
    if (tty) {
        fprintf(stderr, "VNC password for %s (1-8 characters): ", name);
        tcgetattr(0, &old);
        quiet = old;
        quiet.c_lflag &= (tcflag_t)~ECHO;
        tcsetattr(0, TCSAFLUSH, &quiet);
    }
    char line[64];
    bool got = fgets(line, sizeof(line), stdin) != NULL;
    if (tty) {
        tcsetattr(0, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    if (!got)
        return cli_error("no password given on standard input");
    line[strcspn(line, "\r\n")] = '\0';
    size_t len = strlen(line);
    if (len == 0 || len > 8)
        return cli_error("a VNC password is 1 to 8 characters (VNC authentication uses only 8); "
                         "got %zu",
                         len);
    line[len] = '\n';
    int r = fs_write_atomic(path, line, len + 1); /* mode 0600, like every temporary file */
    if (r < 0)
        return cli_error("cannot write %s: %s", path, strerror(-r));
    printf("VNC password of %s set in %s (from its next start)\n", name, path);
    return 0;
}
