import Bits
import GuestMemory
import Virtio

/// Guest memory for the virtio targets: 32 KiB at 0, a hole, 16 KiB at
/// 0x10000, so descriptors can point into RAM, into the hole and beyond.
/// Queue `i`'s rings sit at 0x1000 * (i + 1): descriptor table at +0, avail
/// ring at +0x400, used ring at +0x800 (a queue of up to 64 entries fits).
enum VirtioRig {
    static let regions: [(base: UInt64, size: Int)] = [(0, 0x8000), (0x10000, 0x4000)]
    static let maxQueueSize: UInt16 = 64

    /// Memory filled from the input: its first 48 KiB, in region order.
    static func memory(_ input: inout FuzzInput) -> ArrayGuestMemory {
        let memory = try! ArrayGuestMemory(regions: regions)
        for r in regions {
            let bytes = input.bytes(r.size)
            if !bytes.isEmpty { try! memory.writeBytes(bytes, at: GuestAddress(r.base)) }
        }
        return memory
    }

    /// Activates `device` on `queueCount` queues laid out as above, with the
    /// negotiated features chosen by the input (always VIRTIO_F_VERSION_1),
    /// then runs the input's operations: notify a queue, patch guest memory,
    /// or `extra` (a device's own host-side event). Every step the guest can
    /// cause is a step here; errors are the device's business (it reports
    /// them through its interrupt), so none escapes.
    static func run(_ device: VirtioDevice, _ data: [UInt8],
                    extra: (inout FuzzInput, UInt8) -> Void = { _, _ in }) {
        var header = FuzzInput(Array(data.prefix(12)))
        var input = FuzzInput(Array(data.dropFirst(12)))
        let offered = device.deviceFeatures | VirtioSpec.Feature.indirectDescriptors | VirtioSpec.Feature.eventIndex
        let features = (header.u64() & offered) | VirtioSpec.Feature.version1
        let sizeShift = header.u8() % 7
        let size = min(UInt16(1) << UInt16(sizeShift), maxQueueSize)
        let enabledMask = header.u8()
        var ops = FuzzInput(input.bytes(Int(header.u16() % 512)))
        let memory = memory(&input)
        let interrupt = CountingInterrupt()
        var queues: [SplitVirtqueue] = []
        for (i, maxSize) in device.queueMaxSizes.enumerated() {
            let base = UInt64(0x1000 * (i + 1))
            guard i < 7, enabledMask & (1 << i) == 0,
                  let q = try? SplitVirtqueue(size: min(size, maxSize), maxSize: maxSize, descriptorTable: GuestAddress(base),
                                              availRing: GuestAddress(base + 0x400), usedRing: GuestAddress(base + 0x800),
                                              features: features, memory: memory) else {
                queues.append(.disabled())
                continue
            }
            queues.append(q)
        }
        do {
            try device.activate(memory: memory, features: features, queues: queues, interrupt: interrupt)
        } catch {
            return
        }
        let count = device.queueMaxSizes.count
        while !ops.isEmpty {
            let op = ops.u8()
            switch op % 8 {
            case 0, 1, 2:
                device.queueNotified(Int(op >> 3) % (count + 1))
            case 3, 4:
                // The driver changes its rings or buffers between notifications.
                let address = UInt64(ops.u16())
                _ = try? memory.writeBytes(ops.bytes(Int(op >> 3) % 9), at: GuestAddress(address))
            case 5:
                var config = [UInt8](repeating: 0, count: Int(op >> 3) % 9)
                let offset = Int(ops.u8())
                if offset + config.count <= device.configSize {
                    config.withUnsafeMutableBytes { device.readConfig(offset: offset, data: $0) }
                    let value = ops.bytes(config.count)
                    if value.count == config.count { value.withUnsafeBytes { device.writeConfig(offset: offset, data: $0) } }
                }
            case 6:
                extra(&ops, op >> 3)
            default:
                if op >> 3 == 31 { device.reset(); return }
                device.queueNotified(0)
            }
        }
        device.reset()
    }
}

/// A split virtqueue alone: the driver's rings and buffers are the input.
enum VirtqueueTarget {
    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let features = input.u8()
        let size = UInt16(1) << UInt16(input.u8() % 7)
        let availIndex = input.u16()
        let usedEventAndFlags = input.u32()
        let memory = VirtioRig.memory(&input)
        var f = VirtioSpec.Feature.version1
        if features & 1 != 0 { f |= VirtioSpec.Feature.indirectDescriptors }
        if features & 2 != 0 { f |= VirtioSpec.Feature.eventIndex }
        let base: UInt64 = features & 4 != 0 ? 0x10000 : 0x1000
        guard var q = try? SplitVirtqueue(size: size, descriptorTable: GuestAddress(base), availRing: GuestAddress(base + 0x400),
                                          usedRing: GuestAddress(base + 0x800), features: f, memory: memory) else { return }
        _ = try? memory.writeInteger(availIndex, at: GuestAddress(base + 0x402))
        _ = try? memory.writeInteger(UInt16(truncatingIfNeeded: usedEventAndFlags), at: GuestAddress(base + 0x404 + 2 * UInt64(size)))
        for round in 0..<(Int(size) * 2 + 2) {
            do {
                guard let chain = try q.popAvailable(memory: memory) else { break }
                precondition(chain.head < size, "chain head \(chain.head) outside a queue of \(size)")
                for s in chain.segments where s.length > 0 {
                    precondition(memory.contains(s.address, length: UInt64(s.length)), "a segment outside guest RAM")
                }
                _ = try? chain.writeWritable([UInt8](repeating: 0xA5, count: Int(usedEventAndFlags >> 16) % 64), memory: memory)
                try q.addUsed(head: chain.head, len: UInt32(min(chain.writableLength, 64)), memory: memory)
                if round % 3 == 0 { _ = try q.needsNotification(memory: memory) }
                if features & 8 != 0 { try q.disableNotifications(memory: memory) } else { _ = try q.enableNotifications(memory: memory) }
            } catch {
                break
            }
        }
        _ = try? q.needsNotification(memory: memory)
    }
}

enum VirtioBlockTarget {
    static func run(_ data: [UInt8]) {
        let readOnly = data.first.map { $0 & 0x80 != 0 } ?? false
        let device = VirtioBlock(backend: MemoryDisk(sectors: 64, readOnly: readOnly), serial: "fuzz", queueSize: VirtioRig.maxQueueSize,
                                 queues: 2)
        VirtioRig.run(device, data)
    }
}

enum VirtioNetTarget {
    static func run(_ data: [UInt8]) {
        let device = VirtioNet(backend: CountingNet(), mac: MACAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56])!,
                               queueSize: VirtioRig.maxQueueSize, rxBacklogLimit: 4)
        VirtioRig.run(device, data) { ops, arg in
            // A frame arrives from the TAP device, or the link changes.
            if arg == 31 { device.setLinkUp(ops.bool()); return }
            _ = device.receive(frame: ops.bytes(Int(ops.u16() % 2048)))
        }
    }
}

enum VirtioConsoleTarget {
    static func run(_ data: [UInt8]) {
        let device = VirtioConsole(output: NullConsole(), queueSize: VirtioRig.maxQueueSize)
        VirtioRig.run(device, data) { ops, arg in
            if arg == 31 { device.setSize(cols: ops.u16(), rows: ops.u16()); return }
            _ = device.enqueueInput(ops.bytes(Int(arg) * 8))
        }
    }
}

enum VirtioRNGTarget {
    static func run(_ data: [UInt8]) {
        VirtioRig.run(VirtioRNG(source: PatternEntropy(), queueSize: VirtioRig.maxQueueSize), data)
    }
}

/// A host that accepts everything for endpoints 0-7 and refuses when the
/// input says so, so the device's error paths run too.
final class FuzzVIOMMUHost: VIOMMUHost, @unchecked Sendable {
    var refuse = false
    func hasEndpoint(_ endpoint: UInt32) -> Bool { endpoint < 8 }
    func reservedRegions(endpoint: UInt32) -> [ClosedRange<UInt64>] { endpoint == 1 ? [0x8000_0000...0x8FFF_FFFF] : [] }
    func attach(endpoint: UInt32, domain: UInt32, bypass: Bool, mappings: [DMAMappingTable.Entry]) throws {
        if refuse { throw FuzzHostError.refused }
    }
    func detach(endpoint: UInt32, bypass: Bool) throws { if refuse { throw FuzzHostError.refused } }
    func map(domain: UInt32, entry: DMAMappingTable.Entry) throws { if refuse { throw FuzzHostError.refused } }
    func unmap(domain: UInt32, entries: [DMAMappingTable.Entry]) throws { if refuse { throw FuzzHostError.refused } }
    func domainFreed(_ domain: UInt32) {}
    func setUnattachedBypass(_ bypass: Bool) throws { if refuse { throw FuzzHostError.refused } }
}

enum VirtioIOMMUTarget {
    static func run(_ data: [UInt8]) {
        let host = FuzzVIOMMUHost()
        let device = VirtioIOMMU(host: host, maxDomains: 4, maxMappingsPerDomain: 8, maxMappings: 16,
                                 queueSize: VirtioRig.maxQueueSize)
        VirtioRig.run(device, data) { ops, arg in
            switch arg % 4 {
            case 0: host.refuse.toggle()
            case 1: _ = device.reportFault(endpoint: UInt32(ops.u8() % 10), address: ops.u64(), reason: .mapping)
            case 2: device.systemReset()
            default: _ = device.domain(of: UInt32(ops.u8() % 10))
            }
        }
    }
}
