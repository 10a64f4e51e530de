import Devices
import Synchronization
import Virtio

/// Host-side stand-ins for the fuzz targets: they accept what they are given
/// and keep only counters, so a target's run depends on its input alone.

final class MemoryDisk: BlockBackend, Sendable {
    let capacity: UInt64
    let isReadOnly: Bool
    private let data: Mutex<[UInt8]>

    init(sectors: Int, readOnly: Bool) {
        capacity = UInt64(sectors) * 512
        isReadOnly = readOnly
        data = Mutex([UInt8](repeating: 0, count: sectors * 512))
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try data.withLock { d in
            guard offset <= UInt64(d.count), UInt64(buffer.count) <= UInt64(d.count) - offset else { throw FuzzHostError.outOfRange }
            d.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(offset)..<(Int(offset) + buffer.count)])) }
        }
    }

    func write(at offset: UInt64, from bytes: UnsafeRawBufferPointer) throws {
        try data.withLock { d in
            guard offset <= UInt64(d.count), UInt64(bytes.count) <= UInt64(d.count) - offset else { throw FuzzHostError.outOfRange }
            d.withUnsafeMutableBytes {
                UnsafeMutableRawBufferPointer(rebasing: $0[Int(offset)..<(Int(offset) + bytes.count)]).copyMemory(from: bytes)
            }
        }
    }

    func flush() throws {}

    func zero(at offset: UInt64, length: UInt64, deallocate: Bool) throws {
        try data.withLock { d in
            guard offset <= UInt64(d.count), length <= UInt64(d.count) - offset else { throw FuzzHostError.outOfRange }
            for i in Int(offset)..<Int(offset + length) { d[i] = 0 }
        }
    }
}

enum FuzzHostError: Error { case outOfRange, refused }

final class CountingNet: NetBackend, Sendable {
    let frames = Atomic<Int>(0)
    func send(frame: [UInt8]) throws { frames.add(1, ordering: .relaxed) }
}

final class PatternEntropy: EntropySource, Sendable {
    func randomBytes(count: Int) -> [UInt8] { (0..<max(count, 0)).map { UInt8(truncatingIfNeeded: $0 &* 37) } }
}

final class NullConsole: ConsoleOutput, Sendable {
    func write(_ bytes: [UInt8]) {}
}

final class NullLine: InterruptLine, Sendable {
    func setLevel(_ high: Bool) {}
}

final class NullEvents: MachineEventSink, Sendable {
    func machineEvent(_ event: MachineEvent) {}
}

final class CountingInterrupt: VirtioInterrupt, Sendable {
    let signals = Atomic<Int>(0)
    let resets = Atomic<Int>(0)
    func signalUsedQueue(_ index: Int) { signals.add(1, ordering: .relaxed) }
    func signalConfigChange() {}
    func deviceNeedsReset(_ error: VirtqueueError) { resets.add(1, ordering: .relaxed) }
}
