/* Links the KVM box's init script into vmws (app/box/initramfs.c puts it in the initramfs it
 * builds). The path is relative to the source directory, passed with -I by assets/Makefile.inc. */
        .section .rodata
        .globl  vmws_box_init, vmws_box_init_end
vmws_box_init:
        .incbin "assets/box/init.sh"
vmws_box_init_end:

        .section .note.GNU-stack, "", @progbits
