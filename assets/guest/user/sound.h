/* The built-in guest's PCI and sound interfaces (user/pci.c, user/sound.c): config space
 * through the port-I/O syscalls, an ES1370 driver and the PC speaker, and the shell commands
 * built on them. */
#ifndef VMWS_GUEST_SOUND_H
#define VMWS_GUEST_SOUND_H

#include "assets/guest/user/guest.h"

/* --- pci.c: configuration mechanism #1, bus 0 --- */
uint32_t pci_read32(unsigned slot, unsigned off);
void pci_write32(unsigned slot, unsigned off, uint32_t v);
/* Finds function 0 of VENDOR:DEVICE on bus 0; its slot in *SLOT. */
bool pci_find(uint16_t vendor, uint16_t device, unsigned *slot);

/* --- sound.c: shell commands --- */
void cmd_beep(int argc, char **argv);  /* beep FREQ MS: PC speaker */
void cmd_tone(int argc, char **argv);  /* tone FREQ MS: sine through the ES1370 */
void cmd_pit(int argc, char **argv);   /* pit check: PIT channels 1, 2 and port 0x61 */
void cmd_sound(int argc, char **argv); /* sound info | sound garbage */

/* Kernel (head.S): ES1370 interrupts so far; SYS_WAIT_SOUND sleeps until it moves. */
extern volatile uint32_t irq_sound_count;
static inline void sys_wait_sound(uint32_t seen)
{
    syscall3(SYS_WAIT_SOUND, seen, 0, 0);
}

#endif
