/* vmws: main() and subcommand dispatch. Each subcommand is a function in app/cli_*.c listed
 * in cli_commands[] with its usage text; `vmws help`, `vmws COMMAND --help` and usage errors
 * all come from that one table. With no arguments vmws makes sure the default VM exists and
 * runs (first run only, on a terminal), then opens the dashboard (ui/) on a terminal, or
 * relays the console on a pipe. Where KVM is missing, VM commands run in the KVM box
 * (cli_boxed.c decides first). */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/cli.h"
#include "ui/dashboard.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

static int cmd_help(int argc, char **argv);
static int cmd_version(int argc, char **argv);

const struct cli_command cli_commands[] = {
    {"create", cmd_create,
     "NAME [--memory SIZE] [--cpus N] [--disk SIZE] [--disk-from IMAGE]\n"
     "                  [--os debian [--ssh-key FILE]]\n"
     "                  [--memory-backend file|shm|anon|hugetlbfs]\n"
     "                  [--net user|none] [--forward tcp|udp:HOSTPORT:GUESTPORT]...\n"
     "                  [--reservation SIZE] [--limit SIZE] [--shares N]\n"
     "                  [--dynamic-memory [--memory-min SIZE] [--memory-max SIZE]\n"
     "                   [--memory-buffer PCT]]\n"
     "                  [--kernel bzImage [--initrd FILE] [--append \"CMDLINE\"]]",
     "create a VM (its directory and vm.conf)",
     "  --memory SIZE          guest RAM, e.g. 512M or 2G (default 1G; 16M..1T, multiple of 2M)\n"
     "  --cpus N               vCPUs, 1..64 (default 1; the VM 'default' gets 2)\n"
     "  --disk SIZE            a virtio-blk disk: disk.qcow2 of SIZE (1M..2T) in the VM's\n"
     "                         directory ([disk] path in vm.conf)\n"
     "  --disk-from IMAGE      the disk starts as a copy of IMAGE (raw or qcow2, e.g. a root\n"
     "                         file system from mke2fs -d), at least --disk large\n"
     "  --os debian            the disk holds a Debian 12 system the VM boots (its kernel,\n"
     "                         systemd, DHCP, SSH; the base is built once, as root, with\n"
     "                         debootstrap, and cached; the disk is a linked clone: a qcow2\n"
     "                         overlay on it); prints the user debian's password\n"
     "  --ssh-key FILE         with --os: the user debian's authorized_keys\n"
     "  --memory-backend B     file: sparse NAME.vmem mapped shared (default); shm: memfd;\n"
     "                         anon: private anonymous (THP; KSM with memory_sharing\n"
     "                         = yes in vm.conf); hugetlbfs: huge pages\n"
     "  --kernel FILE          boot this Linux bzImage instead of the built-in guest\n"
     "  --initrd FILE          initial ramdisk for --kernel\n"
     "  --append CMDLINE       kernel command line for --kernel (default console=ttyS0)\n"
     "  --net user|none        user (default): a virtio-net card behind user-mode NAT (the\n"
     "                         guest is 10.0.2.15 by DHCP; 10.0.2.2 is the host's 127.0.0.1);\n"
     "                         none: no network card ([net] enabled in vm.conf)\n"
     "  --forward P:HOST:GUEST host 127.0.0.1:HOST to the guest's port GUEST, P tcp or udp;\n"
     "                         repeatable ([net] forward in vm.conf)\n"
     "  --reservation SIZE     RAM guaranteed to the VM (cgroup v2 memory.min); a VM whose\n"
     "                         reservation the host cannot meet does not start\n"
     "  --limit SIZE           the most host RAM the VM may hold (memory.max; with the file\n"
     "                         backend the rest is written back to NAME.vmem)\n"
     "  --shares N             priority when the host is short (default 1000; [memory])\n"
     "  --dynamic-memory       the VMM moves the balloon from the guest's demand and the\n"
     "                         host's pressure, the guest keeping --memory-min to --memory-max\n"
     "                         (default 0 to all its RAM) with --memory-buffer % over its\n"
     "                         demand (default 20)\n"},
    {"start", cmd_start, "NAME [--display sdl|vnc|sdl,vnc|none]", "start a VM in the background",
     "  Returns once the VM's control socket answers and prints where its VNC server listens;\n"
     "  the VMM logs to vmm.log in the VM's directory, and its serial console is\n"
     "  'vmws console NAME'.\n"
     "  --display MODE         sdl (a window), vnc (127.0.0.1:5900+N), sdl,vnc or none; the\n"
     "                         default ([display] mode in vm.conf, 'auto') is sdl,vnc where a\n"
     "                         display exists, else vnc\n"},
    {"run", cmd_run, "NAME [--paused] [--display MODE] [--ready-fd N]", "run a VM's VMM in the foreground",
     "  --paused               create the machine (or resume it) with its vCPUs paused\n"
     "  --ready-fd N           write one byte to file descriptor N once the VM answers\n"
     "  --display MODE         as for start\n"},
    {"stop", cmd_stop, "NAME", "power a VM off (its vCPUs stop; its memory is discarded)",
     "  Presses the ACPI power button: a guest OS that listens (Linux with systemd, acpid)\n"
     "  shuts down and powers off; vmws waits up to 90 s for it. A guest that does not listen,\n"
     "  or does not finish in time, is powered off like pulling the plug on a machine whose\n"
     "  disks are flushed: RAM does not survive power-off (suspend keeps it).\n"},
    {"kill", cmd_kill, "NAME", "kill a VM's VMM at once (SIGKILL)", NULL},
    {"delete", cmd_delete, "NAME [--force]", "delete a VM and all its files",
     "  --force                kill the VM first if it is running\n"},
    {"suspend", cmd_suspend, "NAME", "suspend a VM: save its state and stop its VMM",
     "  The guest pauses only while its small machine state is written; its memory is already\n"
     "  in NAME.vmem (MAP_SHARED), whose writeback to disk continues in the background.\n"},
    {"resume", cmd_resume, "NAME", "resume a suspended (or paused) VM", NULL},
    {"snapshot", cmd_snapshot, "take|list|info|revert|delete|prune NAME [LABEL] [--json]",
     "snapshot tree: take, list, inspect, revert to, delete or prune snapshots",
     "  take NAME LABEL       keep the VM's present state, memory and disk (pauses it only to\n"
     "                        copy the pages changed since the last snapshot; the disk goes on\n"
     "                        in a new qcow2 overlay); a powered-off VM's snapshot is disk-only\n"
     "  list NAME             draw the tree; '<- you are here' marks what the VM descends from\n"
     "  info NAME LABEL       parent, time, power state, sizes, what deleting it needs\n"
     "  revert NAME LABEL     return to LABEL, memory and disk (the present is kept first as an\n"
     "                        automatic node); the VM ends in LABEL's power state\n"
     "  delete NAME LABEL     merge LABEL's pages into its children and its disk image away\n"
     "                        (streamed or committed, whichever needs less); says first how much\n"
     "                        free space that needs, and refuses without it\n"
     "  prune NAME [--keep N] delete the automatic snapshots reverts kept, all but the newest N\n"},
    {"list", cmd_list, "[--json]", "list VMs with their state", NULL},
    {"status", cmd_status, "NAME [--json]", "show one VM's state and settings", NULL},
    {"ssh", cmd_ssh, "NAME [--user USER] [-- SSH ARGS...]",
     "ssh into the VM through its forward to port 22",
     "  Runs ssh -p PORT USER@127.0.0.1 (USER: debian) with the VM's host key remembered as\n"
     "  vmws-NAME. 'vmws create --os debian' adds the forward (a free port); any VM can have\n"
     "  one with --forward tcp:PORT:22.\n"},
    {"vnc-password", cmd_vnc_password, "NAME [--clear]", "set a VM's VNC password (stdin)",
     "  Reads 1-8 characters from standard input (without echo on a terminal) into\n"
     "  vnc.passwd (mode 0600) in the VM's directory; VNC clients must then give it. Takes\n"
     "  effect at the VM's next start. --clear removes the password.\n"},
    {"console", cmd_console, "NAME [--idle MS]", "attach to a VM's serial console",
     "  On a terminal: interactive, Ctrl-] detaches. On a pipe: stdin goes to the guest and\n"
     "  its output to stdout until the output has been quiet for --idle MS (default 1000)\n"
     "  after stdin ended, or the VM stops.\n"},
    {"mem", cmd_mem, "NAME [--balloon SIZE] [--json]",
     "show what the VM's memory really costs the host, and the guest's view",
     "  --balloon SIZE         ask the running guest to give SIZE of its RAM back (e.g. 256M;\n"
     "                         0 gives it all back to the guest); its virtio-balloon driver\n"
     "                         inflates, and every page it gives leaves the host's memory file\n"
     "  The guest's figures (free, available, cached, faults, swap) come from its balloon\n"
     "  driver's statistics; free page reporting returns the guest's free memory by itself.\n"},
    {"volume", cmd_volume, "NAME [0-100|up|down|mute|unmute|toggle] [--json]",
     "show or set a running VM's sound volume",
     "  0-100                  volume of everything the VM plays (sound card and PC speaker)\n"
     "  up, down               10 louder or quieter\n"
     "  mute, unmute, toggle   silence it, or bring back the volume it had\n"
     "  Without a value: the volume, the sound card's state and the PulseAudio stream's.\n"},
    {"box", cmd_box, "run|start|exec|stop|status|check [OPTIONS] [--] [COMMAND [ARGS]]",
     "run commands on a real KVM where this machine has none (the KVM box)",
     "  The KVM box is QEMU in software mode emulating an AMD CPU with SVM, booting this\n"
     "  machine's Debian kernel, which loads kvm_amd. The host's / is its root (read-only,\n"
     "  with a throwaway layer on top); shared directories are read-write at their own paths.\n"
     "  run [-C DIR] [--timeout S] -- CMD   boot a box, run CMD in DIR (shared), stream its\n"
     "                         output, exit with its status, stop the box\n"
     "  start [--idle S]       start a box that serves many commands (--idle S: it powers\n"
     "                         off after S seconds without one)\n"
     "  exec [-C DIR] -- CMD   run CMD in the running box; --start starts one first if\n"
     "                         none runs; --auto runs CMD natively instead where this\n"
     "                         machine's /dev/kvm works; --exclusive runs CMD alone (one\n"
     "                         such command at a time)\n"
     "  stop | status [--json] | check   stop the box; show it; say whether this machine has\n"
     "                         a usable KVM and what a box would boot\n"
     "  --dir STATE            the box's state directory (default $VMWS_BOX_DIR, else\n"
     "                         RUNTIME/box); one box per directory\n"
     "  --share DIR            share DIR read-write at the same path (repeatable; run, start\n"
     "                         and exec --start also share the working directory)\n"
     "  --cpus N, --memory SIZE   the box's size (default: 1 CPU, which is what has proven\n"
     "                         stable; 8G, at most 3/4 of RAM)\n"
     "  --timeout S            kill the command (and, for run, the box) after S seconds\n"
     "                         (default 6 hours: every command in a box has a limit)\n"
     "  --stdin                forward standard input to the command (default: /dev/null)\n"
     "  --tty                  run the command on a terminal in the box, relayed to this one\n"
     "                         (an interactive shell, the dashboard); --stdin off a terminal\n"
     "  Exit status: the command's; 124 if --timeout ran out; 125 if the box failed (its\n"
     "  kernel panicked, QEMU died), with the end of its console. VMWS_BOX=always uses the\n"
     "  box even where KVM works; VMWS_BOX=never never does.\n"},
    {"help", cmd_help, "[COMMAND]", "show help", NULL},
    {"version", cmd_version, "", "show the version", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

const struct cli_command *cli_find(const char *name)
{
    for (const struct cli_command *c = cli_commands; c->name; c++) {
        if (strcmp(c->name, name) == 0)
            return c;
    }
    return NULL;
}

int cli_print_help(const char *cmd)
{
    const struct cli_command *c = cli_find(cmd);
    if (!c)
        return cli_error("unknown command '%s' (see 'vmws help')", cmd);
    printf("usage: vmws %s %s\n%s.\n", c->name, c->usage, c->summary);
    if (c->details)
        printf("\n%s", c->details);
    return 0;
}

static void print_overview(FILE *f)
{
    fprintf(f, "usage: vmws [COMMAND [ARGS]]\n\n"
               "vmws runs KVM virtual machines, one VMM process per VM. With no command it\n"
               "creates and starts the VM 'default' if needed and opens the dashboard.\n\n"
               "commands:\n");
    for (const struct cli_command *c = cli_commands; c->name; c++)
        fprintf(f, "  %-9s %s\n", c->name, c->summary);
    fprintf(f, "\nSee 'vmws COMMAND --help' for a command's options. VMs live in $VMWS_HOME\n"
               "(default ~/.local/share/vmws), one directory each. Where this machine has no\n"
               "usable KVM, VM commands run in the KVM box (slower, said once); 'vmws --no-box\n"
               "COMMAND' (or VMWS_BOX=never) keeps them here.\n");
}

static int cmd_help(int argc, char **argv)
{
    if (argc > 2)
        return cli_usage_error("help", "expected at most one COMMAND");
    if (argc == 2) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
            return cli_print_help("help");
        if (!cli_find(argv[1]))
            return cli_usage_error("help", "unknown command '%s'", argv[1]);
        return cli_print_help(argv[1]);
    }
    print_overview(stdout);
    return 0;
}

static int cmd_version(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))
        return cli_print_help(argv[0]);
    if (argc > 1)
        return cli_usage_error(argv[0], "unexpected argument '%s'", argv[1]);
    printf("vmws %s\n", PACKAGE_VERSION);
    return 0;
}

/* True if $VMWS_HOME holds at least one VM (a directory with a vm.conf). */
static bool any_vm_exists(void)
{
    char home[PATH_MAX];
    if (paths_home(home, sizeof(home)) < 0)
        return false;
    DIR *d = opendir(home);
    struct dirent *e;
    bool found = false;
    while (d && !found && (e = readdir(d))) {
        char conf[PATH_MAX + 300];
        snprintf(conf, sizeof(conf), "%s/%s/vm.conf", home, e->d_name);
        found = vm_name_valid(e->d_name) && access(conf, F_OK) == 0;
    }
    if (d)
        closedir(d);
    return found;
}

/* Creates (if missing) and starts (if not running) the VM 'default'. */
static int ensure_default_running(void)
{
    struct vm_paths p;
    if (paths_for_vm(CLI_DEFAULT_VM, &p) < 0)
        return cli_error("cannot compute the paths of VM '%s' (check VMWS_HOME)", CLI_DEFAULT_VM);
    if (access(p.config, F_OK) < 0) {
        struct vm_config cfg;
        vmconfig_defaults(&cfg, CLI_DEFAULT_VM);
        cfg.cpus = 2;
        if (cli_create_vm(CLI_DEFAULT_VM, &cfg, CLI_DEFAULT_DISK, false))
            return 1;
    }
    struct cli_vm_state st;
    cli_vm_query(&p, NULL, &st);
    if (!st.running && cli_start_vm(CLI_DEFAULT_VM, false))
        return 1;
    return 0;
}

/* `vmws` alone. On a terminal: the dashboard; on the very first run (no VMs yet) it first
 * creates the VM 'default' (built-in guest, 1 GiB, 2 vCPUs, an 8 GiB sparse disk) and starts it, so a new user sees
 * a live VM. VMs keep running when the dashboard quits. On a pipe (scripts): the default VM,
 * created and started if needed, and its console. */
static int run_default(void)
{
    if (isatty(STDIN_FILENO) && isatty(STDOUT_FILENO)) {
        if (!any_vm_exists() && ensure_default_running())
            return 1;
        return dashboard_run(CLI_DEFAULT_VM);
    }
    if (ensure_default_running())
        return 1;
    return cli_console_attach(CLI_DEFAULT_VM, 1000);
}

int main(int argc, char **argv)
{
    int boxed = cli_boxed_dispatch(&argc, argv);
    if (boxed >= 0)
        return boxed;
    if (argc < 2)
        return run_default();
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        print_overview(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0)
        return cmd_version(1, argv + 1);
    const struct cli_command *c = cli_find(cmd);
    if (!c) {
        fprintf(stderr, "vmws: unknown command '%s' (see 'vmws help')\n", cmd);
        return EXIT_USAGE;
    }
    return c->fn(argc - 1, argv + 1);
}
