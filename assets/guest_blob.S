/* Links the built-in guest's bzImage into libvmws.a, so `vmws` boots it with no file on
 * disk (core/vmm/vmm.h declares the symbols). The path is relative to the build directory, where
 * make runs the assembler; assets/Makefile.inc makes this object depend on the image. */
        .section .rodata
        .balign 4096
        .globl  vmws_guest_bzimage, vmws_guest_bzimage_end
        .type   vmws_guest_bzimage, @object
vmws_guest_bzimage:
        .incbin "assets/guest/vmws-guest.bzImage"
vmws_guest_bzimage_end:
        .size   vmws_guest_bzimage, vmws_guest_bzimage_end - vmws_guest_bzimage

        .section .note.GNU-stack, "", @progbits
