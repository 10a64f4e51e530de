import Devices
import GuestMemory
import PCI
import Synchronization
import Virtio

final class CountingMSIRouter: MSIRouter, Sendable {
    let signals = Atomic<Int>(0)
    func configure(device: PCIAddress, vector: Int, message: MSIMessage?) {}
    func signal(device: PCIAddress, vector: Int) { signals.add(1, ordering: .relaxed) }
}

/// An assigned device whose config space (4 KiB) comes from the input: the
/// capability lists a real device (or a buggy one) may present. Writes are
/// stored; BARs read back what was written.
final class FuzzAssignedBackend: AssignedDeviceBackend, Sendable {
    private let config: Mutex<[UInt8]>
    private let bars = Mutex<[Int: [UInt64: UInt8]]>([:])

    init(config bytes: [UInt8]) {
        var c = bytes + [UInt8](repeating: 0, count: max(0, 4096 - bytes.count))
        c = Array(c.prefix(4096))
        config = Mutex(c)
    }

    func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        config.withLock { c in
            for i in 0..<data.count { data[i] = offset + i >= 0 && offset + i < c.count ? c[offset + i] : 0xFF }
        }
    }

    func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {
        config.withLock { c in
            for i in 0..<data.count where offset + i >= 0 && offset + i < c.count { c[offset + i] = data[i] }
        }
    }

    func readBar(_ index: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        bars.withLock { b in for i in 0..<data.count { data[i] = b[index]?[offset &+ UInt64(i)] ?? 0 } }
    }

    func writeBar(_ index: Int, offset: UInt64, data: UnsafeRawBufferPointer) {
        bars.withLock { b in for i in 0..<min(data.count, 16) { b[index, default: [:]][offset &+ UInt64(i)] = data[i] } }
    }

    func setInterruptMode(_ mode: AssignedInterruptMode) {}
}

/// The PCI root bus as the guest reaches it: config mechanism #1 (0xCF8/
/// 0xCFC) and ECAM, the BAR windows, with two functions behind them: a
/// virtio-pci function (virtio-rng, MSI-X in BAR 0, its queues in guest
/// memory) and an assigned function whose host config space is input.
/// Every access the guest can make is one operation of the input.
enum PCIBusTarget {
    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let hostConfig = input.bytes(Int(input.u16() % 4097))
        let barSizes: [Int: UInt64] = [0: 0x20000, 2: 0x20, 3: 0x4000]
        var ops = FuzzInput(input.bytes(Int(input.u16())))
        let memory = VirtioRig.memory(&input)

        let windows = PCIWindows.standard(memoryMap: GuestMemoryMap(ramBytes: 64 << 20))
        let bus = PCIRootBus(windows: windows, msiRouter: CountingMSIRouter(), intxLine: { _ in NullLine() })
        let mmio = Bus(), pio = Bus()
        guard (try? bus.install(mmioBus: mmio, pioBus: pio)) != nil,
              let virtio = try? VirtioPCIDevice(device: VirtioRNG(source: PatternEntropy(), queueSize: VirtioRig.maxQueueSize),
                                                memory: memory),
              (try? bus.attach(virtio)) != nil else { return }
        // A device whose capabilities the model refuses is not attached, as in the VMM.
        var devices: [PCIDevice] = [virtio]
        if let assigned = try? AssignedPCIFunction(backend: FuzzAssignedBackend(config: hostConfig), barSizes: barSizes,
                                                   romSize: hostConfig.count > 4000 ? 0x8000 : nil, name: "fuzz"),
           (try? bus.attach(assigned)) != nil {
            devices.append(assigned)
        }
        while !ops.isEmpty {
            let op = ops.u8()
            let width = ops.width()
            let write = op & 1 == 0
            var buffer = write ? ops.bytes(width) : []
            buffer += [UInt8](repeating: 0, count: width - buffer.count)
            func access(_ b: Bus, _ address: UInt64) {
                if write { _ = buffer.withUnsafeBytes { b.write(address, data: $0) } } else {
                    _ = buffer.withUnsafeMutableBytes { b.read(address, data: $0) }
                }
            }
            switch (op >> 1) % 6 {
            case 0:
                // Mechanism #1: select a register of device 0-3, then access the data port.
                let select = UInt32(0x8000_0000) | UInt32(ops.u8() % 4) << 11 | UInt32(ops.u8()) & 0xFC
                _ = withUnsafeBytes(of: select.littleEndian) { pio.write(0xCF8, data: $0) }
                access(pio, 0xCFC + UInt64(ops.u8() % 4))
            case 1:
                access(mmio, windows.ecam.base + UInt64(ops.u8() % 4) << 15 + UInt64(ops.u16() % 4096))
            case 2:
                // A BAR of a device, where the guest placed it.
                let regions = devices.flatMap(\.barRegions)
                guard !regions.isEmpty else { continue }
                let r = regions[Int(ops.u8()) % regions.count]
                access(r.kind == .io ? pio : mmio, r.address &+ UInt64(ops.u32()) % (r.size + 16))
            case 3:
                access(mmio, windows.mmio32.base + UInt64(ops.u32()) % windows.mmio32.size)
            case 4:
                access(pio, windows.io.base + UInt64(ops.u16()) % windows.io.size)
            default:
                _ = try? memory.writeBytes(ops.bytes(8), at: GuestAddress(UInt64(ops.u16())))
                virtio.notifyQueue(Int(ops.u8() % 2))
            }
        }
    }
}
