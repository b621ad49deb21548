/* Is there a KVM here that can run a guest? Opening /dev/kvm is not enough to know (a module
 * can be bound but unusable), so the probe creates a VM with one page of memory holding HLT,
 * runs a vCPU in real mode and expects the HLT exit - the least a VMM needs. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "app/box/box.h"

#define PROBE_GPA 0x1000

bool box_kvm_native(char *why, size_t whylen)
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        snprintf(why, whylen, "%s", errno == ENOENT ? "this machine has no /dev/kvm"
                                    : errno == EACCES
                                        ? "no permission to open /dev/kvm (join the group kvm)"
                                        : strerror(errno));
        return false;
    }
    int vm = -1, vcpu = -1;
    void *mem = MAP_FAILED, *run = MAP_FAILED;
    long run_size = 0;
    bool ok = false;
    const char *step = "KVM_GET_API_VERSION";
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        snprintf(why, whylen, "/dev/kvm speaks an unknown API version");
        goto out;
    }
    step = "KVM_CREATE_VM";
    if ((vm = ioctl(kvm, KVM_CREATE_VM, 0)) < 0)
        goto fail;
    step = "guest memory";
    mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        goto fail;
    *(unsigned char *)mem = 0xf4; /* hlt */
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = PROBE_GPA, .memory_size = 4096,
        .userspace_addr = (unsigned long)mem};
    step = "KVM_SET_USER_MEMORY_REGION";
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        goto fail;
    step = "KVM_CREATE_VCPU";
    if ((vcpu = ioctl(vm, KVM_CREATE_VCPU, 0)) < 0)
        goto fail;
    step = "KVM_GET_VCPU_MMAP_SIZE";
    if ((run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0)) <= 0)
        goto fail;
    run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        goto fail;
    struct kvm_sregs sregs;
    step = "KVM_GET_SREGS";
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
        goto fail;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    step = "KVM_SET_SREGS";
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
        goto fail;
    struct kvm_regs regs = {.rip = PROBE_GPA, .rflags = 2};
    step = "KVM_SET_REGS";
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
        goto fail;
    step = "KVM_RUN";
    if (ioctl(vcpu, KVM_RUN, 0) < 0)
        goto fail;
    ok = ((struct kvm_run *)run)->exit_reason == KVM_EXIT_HLT;
    if (!ok)
        snprintf(why, whylen, "a KVM vCPU ran but did not stop at HLT (exit reason %u)",
                 ((struct kvm_run *)run)->exit_reason);
    goto out;
fail:
    snprintf(why, whylen, "/dev/kvm exists but %s failed: %s", step, strerror(errno));
out:
    if (run != MAP_FAILED)
        munmap(run, (size_t)run_size);
    if (vcpu >= 0)
        close(vcpu);
    if (mem != MAP_FAILED)
        munmap(mem, 4096);
    if (vm >= 0)
        close(vm);
    close(kvm);
    return ok;
}
