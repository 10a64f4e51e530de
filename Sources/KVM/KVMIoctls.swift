import CShim

/// The KVM ioctl requests SwiftVMM makes, by when (see `HostIoctls`): after
/// setup, the vCPU loop and its reports, interrupts (irqfd, ioeventfd, IRQ
/// line), MSI routing, memory slots (BARs that move) and kvm-vfio
/// (a device released); during setup only, new VMs, vCPUs, chips, devices
/// and CPUID, which no sandboxed thread may make.
public enum KVMIoctls {
    public static let afterSetup: [(name: String, request: UInt)] = [
        ("KVM_RUN", SHIM_KVM_RUN), ("KVM_GET_REGS", SHIM_KVM_GET_REGS), ("KVM_SET_REGS", SHIM_KVM_SET_REGS),
        ("KVM_GET_SREGS", SHIM_KVM_GET_SREGS), ("KVM_SET_SREGS", SHIM_KVM_SET_SREGS),
        ("KVM_GET_LAPIC", SHIM_KVM_GET_LAPIC), ("KVM_SET_LAPIC", SHIM_KVM_SET_LAPIC),
        ("KVM_GET_MP_STATE", SHIM_KVM_GET_MP_STATE), ("KVM_SET_MP_STATE", SHIM_KVM_SET_MP_STATE),
        ("KVM_SET_MSRS", SHIM_KVM_SET_MSRS), ("KVM_SET_FPU", SHIM_KVM_SET_FPU),
        ("KVM_CHECK_EXTENSION", SHIM_KVM_CHECK_EXTENSION), ("KVM_IRQ_LINE", SHIM_KVM_IRQ_LINE),
        ("KVM_IRQFD", SHIM_KVM_IRQFD), ("KVM_IOEVENTFD", SHIM_KVM_IOEVENTFD),
        ("KVM_SET_GSI_ROUTING", SHIM_KVM_SET_GSI_ROUTING),
        ("KVM_SET_USER_MEMORY_REGION", SHIM_KVM_SET_USER_MEMORY_REGION),
        ("KVM_SET_DEVICE_ATTR", SHIM_KVM_SET_DEVICE_ATTR),
    ]

    public static let setupOnly: [(name: String, request: UInt)] = [
        ("KVM_GET_API_VERSION", SHIM_KVM_GET_API_VERSION), ("KVM_CREATE_VM", SHIM_KVM_CREATE_VM),
        ("KVM_GET_VCPU_MMAP_SIZE", SHIM_KVM_GET_VCPU_MMAP_SIZE), ("KVM_GET_SUPPORTED_CPUID", SHIM_KVM_GET_SUPPORTED_CPUID),
        ("KVM_GET_MSR_INDEX_LIST", SHIM_KVM_GET_MSR_INDEX_LIST), ("KVM_CREATE_VCPU", SHIM_KVM_CREATE_VCPU),
        ("KVM_SET_TSS_ADDR", SHIM_KVM_SET_TSS_ADDR), ("KVM_SET_IDENTITY_MAP_ADDR", SHIM_KVM_SET_IDENTITY_MAP_ADDR),
        ("KVM_CREATE_IRQCHIP", SHIM_KVM_CREATE_IRQCHIP), ("KVM_CREATE_PIT2", SHIM_KVM_CREATE_PIT2),
        ("KVM_CREATE_DEVICE", SHIM_KVM_CREATE_DEVICE), ("KVM_ENABLE_CAP", SHIM_KVM_ENABLE_CAP),
        ("KVM_SET_CPUID2", SHIM_KVM_SET_CPUID2),
    ]
}
