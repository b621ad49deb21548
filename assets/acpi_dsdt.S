/* Links the machine's DSDT, compiled from assets/acpi/dsdt.dsl by iasl, into libvmws.a
 * (core/boot/acpi.c copies it into guest memory). The path is relative to the build directory,
 * where make runs the assembler; assets/Makefile.inc makes this object depend on the table. */
        .section .rodata
        .globl  vmws_dsdt_aml, vmws_dsdt_aml_end
vmws_dsdt_aml:
        .incbin "assets/acpi/dsdt.aml"
vmws_dsdt_aml_end:

        .section .note.GNU-stack, "", @progbits
