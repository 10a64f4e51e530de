import FoundationEssentials
import HostSys
import KVM
import Logging
import PCI
import Synchronization

/// Delivers PCI MSI/MSI-X vectors through KVM: each (device, vector) gets a
/// GSI (from 24 up, after the IOAPIC pins) with an MSI route and an irqfd.
/// `configure` rewrites the GSI routing table (KVM_SET_GSI_ROUTING replaces
/// it whole, so the default IOAPIC/PIC routes are always included);
/// `signal` writes the vector's eventfd, and KVM injects the message.
///
/// Masking: a vector whose message is withdrawn (`configure(nil)`: masked or
/// disabled) has its irqfd deassigned, so an assigned device that fires it
/// meanwhile only counts up the eventfd; when the guest unmasks it the irqfd
/// is assigned again and KVM injects at once if the eventfd was signalled
/// (kvm_irqfd_assign polls it), which is the pending-bit behaviour PCI asks
/// for (PCI 3.0 §6.8.2.9). Emulated devices keep their own pending bits and
/// never signal a withdrawn vector.
final class KVMMSIRouter: MSIRouter {
    private struct Key: Hashable { let device: PCIAddress; let vector: Int }
    private struct Vector { let gsi: UInt32; let event: EventFD; var message: MSIMessage?; var assigned: Bool }

    /// Every vector made so far and the GSI the next one gets.
    private struct State {
        var vectors: [Key: Vector] = [:]
        var nextGSI = GSIRoute.firstMSIGSI

        /// The routes to install: KVM's defaults plus every configured MSI vector.
        var routes: [GSIRoute] {
            GSIRoute.defaultX86 + vectors.values.compactMap { v in
                v.message.map { GSIRoute.msi(gsi: v.gsi, address: $0.address, data: $0.data) }
            }.sorted { $0.gsi < $1.gsi }
        }

        /// The vector's GSI and eventfd, made on first use.
        mutating func vector(_ key: Key) throws -> Vector {
            if let v = vectors[key] { return v }
            guard nextGSI < KVMMSIRouter.maxGSI else {
                throw MachineError.setup("\(key.device) MSI vector \(key.vector): out of GSIs (KVM allows \(KVMMSIRouter.maxGSI))")
            }
            let v = Vector(gsi: nextGSI, event: try EventFD(), message: nil, assigned: false)
            nextGSI += 1
            vectors[key] = v
            return v
        }
    }

    private let vm: any VMInterruptRouting
    private let logger: Logger
    /// Held across each routing change, so the table KVM gets is always whole.
    private let state = Mutex(State())
    /// KVM's limit on GSIs (KVM_MAX_IRQ_ROUTES is 4096 on x86).
    static let maxGSI: UInt32 = 4096

    init(vm: any VMInterruptRouting, logger: Logger) {
        self.vm = vm
        self.logger = logger
    }

    /// The eventfds of vectors 0..<count of `device`, for an assigned device
    /// whose interrupts VFIO signals straight into them (VFIO_DEVICE_SET_IRQS).
    func eventFDs(device: PCIAddress, count: Int) throws -> [Int32] {
        try state.withLock { s in
            try (0..<count).map { try s.vector(Key(device: device, vector: $0)).event.fd.raw }
        }
    }

    /// The eventfd of `device`'s vector `vector`: writing it delivers the
    /// vector while the guest has it configured and unmasked, and while it
    /// is masked the count waits for the unmask (see the type's
    /// documentation). For a kernel data path (vhost) that signals the
    /// guest without the VMM.
    func eventFD(device: PCIAddress, vector: Int) throws -> EventFD {
        try state.withLock { try $0.vector(Key(device: device, vector: vector)).event }
    }

    func configure(device: PCIAddress, vector: Int, message: MSIMessage?) {
        state.withLock { s in
            let key = Key(device: device, vector: vector)
            guard s.vectors[key] != nil || message != nil else { return }
            do {
                var v = try s.vector(key)
                v.message = message
                s.vectors[key] = v
                try vm.setGSIRouting(s.routes)
                if message != nil, !v.assigned {
                    try vm.registerIRQFD(v.event, gsi: v.gsi)
                    v.assigned = true
                } else if message == nil, v.assigned {
                    try vm.unregisterIRQFD(v.event, gsi: v.gsi)
                    v.assigned = false
                }
                s.vectors[key] = v
            } catch {
                logger.error("\(device) MSI vector \(vector): \(error)")
            }
        }
    }

    func signal(device: PCIAddress, vector: Int) {
        state.withLock { $0.vectors[Key(device: device, vector: vector)] }?.event.signal()
    }
}
