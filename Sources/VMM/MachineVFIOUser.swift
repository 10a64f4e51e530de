import Bits
import GuestMemory
import HostSys
import Logging
import VFIOUser
import VMConfig

/// Guest RAM of one slot as a vfio-user DMA window: DMA_READ and DMA_WRITE
/// messages the client has checked against the window come here, and go
/// through the guest-memory layer's checked accesses.
final class GuestRAMWindow: VFIOUserDMAMemory {
    let ram: GuestRAM
    let base: UInt64

    init(ram: GuestRAM, base: UInt64) {
        self.ram = ram
        self.base = base
    }

    func read(at offset: UInt64, count: Int) -> [UInt8]? {
        let (at, overflow) = base.addingReportingOverflow(offset)
        guard !overflow else { return nil }
        var out = [UInt8](repeating: 0, count: count)
        do { try out.withUnsafeMutableBytes { try ram.read(into: $0, at: GuestAddress(at)) } } catch { return nil }
        return out
    }

    func write(at offset: UInt64, _ bytes: [UInt8]) -> Bool {
        let (at, overflow) = base.addingReportingOverflow(offset)
        guard !overflow else { return false }
        do { try bytes.withUnsafeBytes { try ram.write($0, at: GuestAddress(at)) } } catch { return false }
        return true
    }
}

/// The `[[vfio_user]]` devices: each server connected, its device read, guest
/// RAM given to it as DMA windows at DMA address == guest physical address
/// (with the memfds in `fd` mode, without in `message` mode), and the device
/// put behind the same passthrough glue as a VFIO device.
enum MachineVFIOUser {
    static func open(config: VMConfig, vm: any PassthroughVM, ram: GuestRAM, router: KVMMSIRouter,
                     slots: MemorySlotPool, logger: Logger) throws -> [PassthroughDevice] {
        var out: [PassthroughDevice] = []
        for (i, entry) in config.vfioUser.enumerated() {
            let what = "vfio_user[\(i)].socket \(entry.socket)"
            let socket = entry.socket
            let device: VFIOUserDevice
            do {
                device = try VFIOUserDevice.open(
                    socket: socket, log: { logger.info("\($0)") },
                    onDisconnect: { why in
                        logger.error("vfio-user \(socket): the server is gone (\(why)); the VM runs on and its guest reads all ones from the device, as from one pulled out")
                    })
            } catch {
                out.forEach { _ = $0.shutdown() }
                throw MachineError.passthrough("\(what): \(error)")
            }
            do {
                for slot in ram.slots {
                    try device.client.dmaMap(address: slot.guestBase, size: slot.size, flags: [.readable, .writable],
                                             memory: GuestRAMWindow(ram: ram, base: slot.guestBase),
                                             fd: entry.dma == .fd ? slot.mapping.fd.raw : nil, fdOffset: 0)
                }
            } catch {
                device.close()
                out.forEach { _ = $0.shutdown() }
                throw MachineError.passthrough("\(what): giving the server guest RAM: \(error)")
            }
            let total = ram.slots.reduce(UInt64(0)) { $0 + $1.size }
            let dma = entry.dma == .fd
                ? "DMA by fd: guest RAM's \(ram.slots.count) memfd\(ram.slots.count == 1 ? "" : "s") (\(formatBytes(total))) passed to the server, which can reach all of guest RAM at memory speed"
                : "DMA by message: no descriptor passed; each DMA_READ/DMA_WRITE is checked against the \(ram.slots.count) window\(ram.slots.count == 1 ? "" : "s") (\(formatBytes(total))) and copied by the VMM"
            logger.info("vfio-user \(socket): device [\(device.pciID)], \(device.regions.count) regions, interrupts \(device.irqs.keys.sorted().map { $0 == 0 && device.intxAutomasked ? "INTx (automasked: unmasked at each guest EOI)" : irqName($0) }.joined(separator: ", ")); \(dma)")
            logger.info("coherency vfio-user \(socket): no IOMMU and no kvm-vfio registration: the server reaches guest RAM only as a process (CPU loads and stores, or the VMM's copies), which are cache-coherent, so it gives the guest's WBINVD nothing to flush")
            if config.viommu != nil {
                logger.info("vfio-user \(socket): outside the vIOMMU (its DMA windows are all of guest RAM, DMA address == guest physical)")
            }
            out.append(PassthroughDevice(device: device, name: socket, kind: "vfio-user", barAddresses: entry.barAddresses,
                                         entryDescription: what, behindVIOMMU: false, vm: vm, router: router, slots: slots,
                                         logger: logger))
        }
        return out
    }

    /// VFIO's PCI IRQ indexes, by name.
    private static func irqName(_ index: UInt32) -> String {
        switch index {
        case 0: "INTx"
        case 1: "MSI"
        case 2: "MSI-X"
        case 3: "ERR"
        case 4: "REQ"
        default: "index \(index)"
        }
    }
}
