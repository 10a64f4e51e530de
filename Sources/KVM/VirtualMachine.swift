import CShim
import HostSys

/// A KVM virtual machine (the fd returned by KVM_CREATE_VM).
public final class VirtualMachine: Sendable {
    public let system: KVMSystem
    let fd: FileDescriptor

    init(system: KVMSystem, fd: FileDescriptor) {
        self.system = system
        self.fd = fd
    }

    /// Maps host memory into guest physical space (size 0 deletes the slot).
    /// The corresponding ioctl is `KVM_SET_USER_MEMORY_REGION`.
    public func setUserMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64, hostAddress: UInt64, readOnly: Bool) throws {
        var r = kvm_userspace_memory_region()
        r.slot = slot
        r.flags = readOnly ? UInt32(KVM_MEM_READONLY) : 0
        r.guest_phys_addr = guestAddress
        r.memory_size = size
        r.userspace_addr = hostAddress
        try kvmCall { try fd.ioctl(SHIM_KVM_SET_USER_MEMORY_REGION, value: &r, "KVM_SET_USER_MEMORY_REGION slot \(slot)") }
    }

    /// Three pages below 4 GiB for Intel's real-mode TSS. The corresponding ioctl is `KVM_SET_TSS_ADDR`.
    public func setTSSAddress(_ address: UInt64) throws {
        try kvmCall { try fd.ioctl(SHIM_KVM_SET_TSS_ADDR, UInt(address), "KVM_SET_TSS_ADDR") }
    }

    /// One page for Intel's EPT identity map. The corresponding ioctl is `KVM_SET_IDENTITY_MAP_ADDR`.
    public func setIdentityMapAddress(_ address: UInt64) throws {
        var a = address
        try kvmCall { try fd.ioctl(SHIM_KVM_SET_IDENTITY_MAP_ADDR, value: &a, "KVM_SET_IDENTITY_MAP_ADDR") }
    }

    /// In-kernel PIC, IOAPIC and local APICs. The corresponding ioctl is `KVM_CREATE_IRQCHIP`.
    public func createIRQChip() throws {
        try kvmCall { try fd.ioctl(SHIM_KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP") }
    }

    /// In-kernel i8254 PIT with a dummy speaker port (0x61).
    /// The corresponding ioctl is `KVM_CREATE_PIT2`.
    public func createPIT() throws {
        var c = kvm_pit_config()
        c.flags = SHIM_KVM_PIT_SPEAKER_DUMMY
        try kvmCall { try fd.ioctl(SHIM_KVM_CREATE_PIT2, value: &c, "KVM_CREATE_PIT2") }
    }

    /// Sets an interrupt line of the in-kernel irqchip (GSI; ISA IRQs 0-15 go to
    /// both the PIC and the IOAPIC). The corresponding ioctl is `KVM_IRQ_LINE`.
    public func setIRQLine(_ irq: UInt32, level: Bool) throws {
        var l = kvm_irq_level()
        l.irq = irq
        l.level = level ? 1 : 0
        try kvmCall { try fd.ioctl(SHIM_KVM_IRQ_LINE, value: &l, "KVM_IRQ_LINE \(irq)") }
    }

    /// Creates vCPU `id`. The corresponding ioctl is `KVM_CREATE_VCPU`.
    public func createVCPU(id: UInt32) throws -> VCPU {
        let raw = try kvmCall { try fd.ioctl(SHIM_KVM_CREATE_VCPU, UInt(id), "KVM_CREATE_VCPU \(id)") }
        let vfd = FileDescriptor(adopting: raw)
        let size = try system.vcpuMmapSize()
        let run = try kvmCall { try FileMapping(fd: vfd, size: size, what: "kvm_run of vCPU \(id)") }
        return VCPU(id: id, fd: vfd, run: run)
    }
}
