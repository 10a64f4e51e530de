import Foundation
import HostSys
import KVM
import Logging
import PCI

/// Delivers PCI MSI/MSI-X vectors through KVM: each (device, vector) gets a
/// GSI (from 24 up, after the IOAPIC pins) with an MSI route and an irqfd.
/// `configure` rewrites the GSI routing table (KVM_SET_GSI_ROUTING replaces
/// it whole, so the default IOAPIC/PIC routes are always included);
/// `signal` writes the vector's eventfd, and KVM injects the message.
final class KVMMSIRouter: MSIRouter, @unchecked Sendable {
    private struct Key: Hashable { let device: PCIAddress; let vector: Int }
    private struct Vector { let gsi: UInt32; let event: EventFD; var message: MSIMessage? }

    private let vm: VirtualMachine
    private let logger: Logger
    private let lock = NSLock()
    private var vectors: [Key: Vector] = [:]
    private var nextGSI = GSIRoute.firstMSIGSI
    /// KVM's limit on GSIs (KVM_MAX_IRQ_ROUTES is 4096 on x86).
    static let maxGSI: UInt32 = 4096

    init(vm: VirtualMachine, logger: Logger) {
        self.vm = vm
        self.logger = logger
    }

    /// The routes to install: KVM's defaults plus every configured MSI vector.
    /// Called with the lock held.
    private func routesLocked() -> [GSIRoute] {
        GSIRoute.defaultX86 + vectors.values.compactMap { v in
            v.message.map { GSIRoute.msi(gsi: v.gsi, address: $0.address, data: $0.data) }
        }.sorted { $0.gsi < $1.gsi }
    }

    func configure(device: PCIAddress, vector: Int, message: MSIMessage?) {
        lock.lock(); defer { lock.unlock() }
        let key = Key(device: device, vector: vector)
        var newIRQFD: Vector?
        if var v = vectors[key] {
            v.message = message
            vectors[key] = v
        } else {
            guard message != nil else { return }
            guard nextGSI < Self.maxGSI else {
                logger.error("\(device) MSI vector \(vector): out of GSIs")
                return
            }
            do {
                let v = Vector(gsi: nextGSI, event: try EventFD(), message: message)
                nextGSI += 1
                vectors[key] = v
                newIRQFD = v
            } catch {
                logger.error("\(device) MSI vector \(vector): \(error)")
                return
            }
        }
        do {
            try vm.setGSIRouting(routesLocked())
            if let v = newIRQFD { try vm.registerIRQFD(v.event, gsi: v.gsi) }
        } catch {
            logger.error("\(device) MSI vector \(vector): \(error)")
        }
    }

    func signal(device: PCIAddress, vector: Int) {
        lock.lock()
        let v = vectors[Key(device: device, vector: vector)]
        lock.unlock()
        v?.event.signal()
    }
}
