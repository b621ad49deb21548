/* Host backends that pull in large libraries - the SDL2 window, the VNC server, the PulseAudio
 * client - are shared objects (vmws-NAME.so) that only a VMM that uses them loads. The one
 * idea: every other vmws process (the command line, the dashboard, a headless VMM) then starts
 * without mapping or relocating those libraries, which is most of what starting vmws cost.
 * A module exports one table of operations, vmws_module_NAME; it calls back into vmws only
 * through the symbols listed in core/vmm/module.syms. */
#ifndef VMWS_MODULE_H
#define VMWS_MODULE_H

#include <stddef.h>

/* The operations table of module NAME ("sdl", "vnc", "pulse"), loading vmws-NAME.so on first
 * use from $VMWS_MODULE_DIR, else this program's own directory (a build tree), else the
 * installed module directory. NULL with ERR saying why. Any thread. */
const void *vmws_module(const char *name, char *err, size_t errlen);

#endif
