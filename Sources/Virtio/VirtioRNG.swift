import GuestMemory
import Synchronization

/// Where the entropy device's bytes come from. The VMM uses
/// `SystemEntropySource`; tests use a deterministic one.
public protocol EntropySource: AnyObject, Sendable {
    /// Returns `count` random bytes.
    func randomBytes(count: Int) -> [UInt8]
}

/// The host's CSPRNG (`SystemRandomNumberGenerator`: `getrandom(2)` on Linux).
public final class SystemEntropySource: EntropySource {
    public init() {}

    public func randomBytes(count: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        var out = [UInt8](repeating: 0, count: max(count, 0))
        var i = 0
        while i < out.count {
            var word = g.next()
            for _ in 0..<8 where i < out.count {
                out[i] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                i += 1
            }
        }
        return out
    }
}

/// virtio entropy device (virtio 1.2 §5.4): one request queue of
/// device-writable buffers that the device fills with random bytes. No
/// feature bits, no configuration.
///
/// Each buffer gets at most `maxBytesPerRequest` bytes (§5.4.6.2: "MAY use
/// less than the entire buffer length"), so a guest cannot make the VMM
/// allocate a 4 GiB buffer. A chain with a device-readable buffer is a guest
/// error (§5.4.6.1) and puts the device in DEVICE_NEEDS_RESET. A buffer the
/// device cannot reach (behind a vIOMMU, unmapped or read-only) is returned
/// with nothing written, and the device goes on.
public final class VirtioRNG: VirtioDevice {
    public static let requestQueue = 0 // §5.4.2
    public static let defaultQueueSize: UInt16 = 256
    public static let defaultMaxBytesPerRequest = 64 * 1024

    private struct Active {
        let memory: GuestMemoryAccess
        var queue: SplitVirtqueue
        let interrupt: VirtioInterrupt
        var broken = false
    }

    private let source: EntropySource
    private let queueSize: UInt16
    private let maxBytesPerRequest: Int
    private let state = Mutex<Active?>(nil)

    public init(source: EntropySource = SystemEntropySource(), queueSize: UInt16 = VirtioRNG.defaultQueueSize,
                maxBytesPerRequest: Int = VirtioRNG.defaultMaxBytesPerRequest) {
        self.source = source
        self.queueSize = queueSize
        self.maxBytesPerRequest = max(1, maxBytesPerRequest)
    }

    public var deviceType: UInt16 { VirtioSpec.DeviceType.entropy }
    public var deviceFeatures: UInt64 { 0 } // §5.4.3: none defined
    public var queueMaxSizes: [UInt16] { [queueSize] }
    public var configSize: Int { 0 } // §5.4.4: none defined

    public func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        copyConfig([], offset: offset, into: data)
    }

    public func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {}

    /// Also serves any buffers posted before DRIVER_OK.
    public func activate(memory: GuestMemoryAccess, features: UInt64, queues: [SplitVirtqueue],
                         interrupt: VirtioInterrupt) throws {
        guard queues.count == 1 else { throw VirtqueueError.device("entropy device needs exactly 1 queue") }
        state.withLock { active in
            active = Active(memory: memory, queue: queues[0], interrupt: interrupt)
            process(&active)
        }
    }

    public func reset() {
        state.withLock { $0 = nil }
    }

    /// Total random bytes handed to the guest (for tests and statistics).
    public var bytesProvided: UInt64 { counter.withLock { $0.bytes } }
    /// Buffers returned empty because the device could not write them.
    public var dmaFailures: UInt64 { counter.withLock { $0.dmaFailures } }
    private let counter = Mutex<(bytes: UInt64, dmaFailures: UInt64)>((0, 0))

    public func queueNotified(_ index: Int) {
        guard index == Self.requestQueue else { return }
        state.withLock { process(&$0) }
    }

    private func process(_ active: inout Active?) {
        guard var a = active, !a.broken else { return }
        do {
            while let chain = try a.queue.popAvailable(memory: a.memory) {
                try chain.requireWritableOnly()
                let n = Int(min(chain.writableLength, UInt64(maxBytesPerRequest)))
                var written = 0
                do {
                    written = try chain.writeWritable(source.randomBytes(count: n), memory: a.memory)
                    counter.withLock { $0.bytes &+= UInt64(written) }
                } catch VirtqueueError.memory {
                    // Out of reach (reported as a DMA fault): nothing for this request.
                    counter.withLock { $0.dmaFailures &+= 1 }
                }
                try a.queue.addUsed(head: chain.head, len: UInt32(clamping: written), memory: a.memory)
            }
            if try a.queue.needsNotification(memory: a.memory) {
                a.interrupt.signalUsedQueue(Self.requestQueue)
            }
        } catch {
            a.broken = true
            a.interrupt.deviceNeedsReset(after: error)
        }
        active = a
    }
}
