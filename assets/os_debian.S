/* Links the builder of `vmws create --os debian` into vmws (app/cli_os.c writes it out and runs
 * it). The path is relative to the source directory, passed with -I by app/Makefile.inc. */
        .section .rodata
        .globl  vmws_os_debian, vmws_os_debian_end
vmws_os_debian:
        .incbin "assets/os/debian.sh"
vmws_os_debian_end:

        .section .note.GNU-stack, "", @progbits
