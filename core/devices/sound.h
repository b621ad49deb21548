/* The sound devices: an Ensoniq ES1370 on the PCI bus (es1370.c) and the PC speaker, PIT
 * channel 2 gated by port 0x61, both in KVM (pcspk.c). Neither keeps time on its own: a clock -
 * the mixer (audio/audio.h) - asks each for the frames due, and each renders them into a mix,
 * moving the guest's DMA and raising its interrupts as real hardware would in that time. */
#ifndef VMWS_SOUND_H
#define VMWS_SOUND_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* What every source renders into: interleaved stereo, 44.1 kHz, summed in 32 bits. */
#define AUDIO_RATE 44100
#define AUDIO_CHANNELS 2

#define ES1370_PCI_SLOT 5

struct machine;
struct pci_bus;
struct state_writer;
struct state_reader;

struct es1370;
struct es1370 *es1370_create(struct machine *m, struct pci_bus *pci, unsigned slot);
void es1370_destroy(struct es1370 *e);
/* Adds N frames of the card's output to MIX (stereo int32), consuming guest PCM at the
 * programmed rates and raising period interrupts. Returns true if a DAC was running. */
bool es1370_render(struct es1370 *e, int32_t *mix, unsigned n);
/* While quiesced (counted, nesting) render touches no guest RAM: on return of es1370_quiesce
 * no DMA is in progress, so a snapshot can capture or rewrite pages underneath. */
void es1370_quiesce(struct es1370 *e);
void es1370_resume(struct es1370 *e);
json_t *es1370_status_json(struct es1370 *e);
int es1370_save(struct es1370 *e, struct state_writer *w); /* record 'ES13' */
int es1370_load(struct es1370 *e, const struct state_reader *r);

struct pcspk;
struct pcspk *pcspk_create(struct machine *m);
void pcspk_destroy(struct pcspk *p);
bool pcspk_render(struct pcspk *p, int32_t *mix, unsigned n);
json_t *pcspk_status_json(struct pcspk *p);
int pcspk_save(struct pcspk *p, struct state_writer *w); /* record 'PCSP' */
int pcspk_load(struct pcspk *p, const struct state_reader *r);
/* When the devices resume after a save or a load (the vCPUs still stopped, the machine's PIT
 * record applied): gives KVM's PIT the gate and speaker bits of a just-loaded record saved by
 * a vmws that kept them itself (version 1); otherwise nothing. */
void pcspk_resume(struct pcspk *p);

#endif
