import CShim
import HostSys

/// One GSI route (struct kvm_irq_routing_entry).
public enum GSIRoute: Equatable, Sendable {
    /// To a pin of the in-kernel PIC (chip 0 master, 1 slave) or IOAPIC (chip 2).
    case irqchip(gsi: UInt32, chip: UInt32, pin: UInt32)
    /// An MSI message: writing the GSI's irqfd injects this message.
    case msi(gsi: UInt32, address: UInt64, data: UInt32)

    public var gsi: UInt32 {
        switch self {
        case let .irqchip(g, _, _), let .msi(g, _, _): return g
        }
    }

    var kvm: kvm_irq_routing_entry {
        var e = kvm_irq_routing_entry()
        switch self {
        case let .irqchip(gsi, chip, pin):
            e.gsi = gsi
            e.type = SHIM_KVM_IRQ_ROUTING_IRQCHIP
            e.u.irqchip.irqchip = chip
            e.u.irqchip.pin = pin
        case let .msi(gsi, address, data):
            e.gsi = gsi
            e.type = SHIM_KVM_IRQ_ROUTING_MSI
            e.u.msi.address_lo = UInt32(truncatingIfNeeded: address)
            e.u.msi.address_hi = UInt32(truncatingIfNeeded: address >> 32)
            e.u.msi.data = data
        }
        return e
    }

    /// The routes KVM installs by itself with KVM_CREATE_IRQCHIP
    /// (arch/x86/kvm/irq_comm.c default_routing): GSI 0-15 to the IOAPIC pin of
    /// the same number and to the PIC, GSI 16-23 to the IOAPIC only.
    /// KVM_SET_GSI_ROUTING replaces the whole table, so a VMM adding MSI
    /// routes must send these too.
    public static let defaultX86: [GSIRoute] = (0..<24).flatMap { (gsi: UInt32) -> [GSIRoute] in
        var r: [GSIRoute] = [.irqchip(gsi: gsi, chip: SHIM_KVM_IRQCHIP_IOAPIC, pin: gsi)]
        if gsi < 16 {
            r.append(.irqchip(gsi: gsi, chip: gsi < 8 ? SHIM_KVM_IRQCHIP_PIC_MASTER : SHIM_KVM_IRQCHIP_PIC_SLAVE, pin: gsi % 8))
        }
        return r
    }

    /// First GSI free for MSI routes (after the IOAPIC's 24 pins).
    public static let firstMSIGSI: UInt32 = 24
}

extension VirtualMachine {
    /// Replaces the GSI routing table. The corresponding ioctl is `KVM_SET_GSI_ROUTING`.
    public func setGSIRouting(_ routes: [GSIRoute]) throws {
        var header = kvm_irq_routing()
        header.nr = UInt32(routes.count)
        try withFlexibleArray(header, count: routes.count, of: kvm_irq_routing_entry.self) { r, entries in
            for (i, route) in routes.enumerated() { entries[i] = route.kvm }
            try kvmCall { try fd.ioctl(SHIM_KVM_SET_GSI_ROUTING, pointer: UnsafeMutableRawPointer(r), "KVM_SET_GSI_ROUTING (\(routes.count) routes)") }
        }
    }

    /// Makes a write to `event` raise `gsi`; with `resample`, a level-triggered
    /// line whose EOI signals `resample` (INTx). The corresponding ioctl is `KVM_IRQFD`.
    public func registerIRQFD(_ event: EventFD, gsi: UInt32, resample: EventFD?) throws {
        var f = kvm_irqfd()
        f.fd = UInt32(bitPattern: event.fd.raw)
        f.gsi = gsi
        if let r = resample {
            f.flags = SHIM_KVM_IRQFD_FLAG_RESAMPLE
            f.resamplefd = UInt32(bitPattern: r.fd.raw)
        }
        try kvmCall { try fd.ioctl(SHIM_KVM_IRQFD, value: &f, "KVM_IRQFD gsi \(gsi)") }
    }

    /// The corresponding ioctl is `KVM_IRQFD` with KVM_IRQFD_FLAG_DEASSIGN.
    public func unregisterIRQFD(_ event: EventFD, gsi: UInt32) throws {
        var f = kvm_irqfd()
        f.fd = UInt32(bitPattern: event.fd.raw)
        f.gsi = gsi
        f.flags = SHIM_KVM_IRQFD_FLAG_DEASSIGN
        try kvmCall { try fd.ioctl(SHIM_KVM_IRQFD, value: &f, "KVM_IRQFD deassign gsi \(gsi)") }
    }

    /// Makes guest writes of `length` bytes at `address` (MMIO, or port I/O with
    /// `pio`) signal `event` inside KVM, without a userspace exit; with
    /// `datamatch`, only writes of that value. The corresponding ioctl is `KVM_IOEVENTFD`.
    public func registerIOEventFD(_ event: EventFD, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64?) throws {
        try ioEventFD(event, address: address, length: length, pio: pio, datamatch: datamatch, deassign: false)
    }

    /// The corresponding ioctl is `KVM_IOEVENTFD` with KVM_IOEVENTFD_FLAG_DEASSIGN.
    public func unregisterIOEventFD(_ event: EventFD, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64?) throws {
        try ioEventFD(event, address: address, length: length, pio: pio, datamatch: datamatch, deassign: true)
    }

    private func ioEventFD(_ event: EventFD, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64?, deassign: Bool) throws {
        var e = kvm_ioeventfd()
        e.addr = address
        e.len = length
        e.fd = event.fd.raw
        if pio { e.flags |= SHIM_KVM_IOEVENTFD_FLAG_PIO }
        if let d = datamatch { e.flags |= SHIM_KVM_IOEVENTFD_FLAG_DATAMATCH; e.datamatch = d }
        if deassign { e.flags |= SHIM_KVM_IOEVENTFD_FLAG_DEASSIGN }
        try kvmCall { try fd.ioctl(SHIM_KVM_IOEVENTFD, value: &e, "KVM_IOEVENTFD 0x\(String(address, radix: 16))") }
    }
}
