import Devices
import GuestMemory
import Synchronization

/// virtio console device (virtio 1.2 §5.3) with one port and no
/// multiport support: receiveq 0 carries host input to the guest in
/// device-writable buffers, transmitq 1 carries guest output in
/// device-readable buffers (§5.3.2). Offers VIRTIO_CONSOLE_F_SIZE (`cols` and
/// `rows` valid) and VIRTIO_CONSOLE_F_EMERG_WRITE (a byte written to
/// `emerg_wr` goes straight to the output, even before the driver set up the
/// queues, §5.3.5.1).
///
/// Host input (`enqueueInput`) waits in a bounded buffer until the driver
/// posts receive buffers. Output is written to the `ConsoleOutput` with the
/// lock held, so it keeps the guest's order. A transmit buffer is read in
/// chunks of `transmitChunk` bytes, so a huge chain never becomes one huge
/// allocation. A wrong-direction buffer (§5.3.6.1) puts the device in
/// DEVICE_NEEDS_RESET; a buffer the device cannot reach (behind a vIOMMU)
/// is returned unused (transmit: its bytes dropped; receive: length 0, the
/// input kept for the next buffer) and the device goes on.
public final class VirtioConsole: VirtioDevice {
    public static let receiveQueue = 0  // §5.3.2 receiveq(port0)
    public static let transmitQueue = 1 // §5.3.2 transmitq(port0)
    /// §5.3.3 feature bits.
    public static let featureSize: UInt64 = 1 << 0           // VIRTIO_CONSOLE_F_SIZE
    public static let featureMultiport: UInt64 = 1 << 1      // VIRTIO_CONSOLE_F_MULTIPORT (not offered)
    public static let featureEmergencyWrite: UInt64 = 1 << 2 // VIRTIO_CONSOLE_F_EMERG_WRITE
    /// §5.3.4 `struct virtio_console_config { le16 cols; le16 rows; le32
    /// max_nr_ports; le32 emerg_wr; }`: offsets and size.
    public enum ConfigOffset {
        public static let cols = 0
        public static let rows = 2
        public static let maxPorts = 4
        public static let emergencyWrite = 8
        public static let size = 12
    }
    public static let defaultQueueSize: UInt16 = 256
    public static let defaultInputCapacity = 64 * 1024
    static let transmitChunk = 16 * 1024

    private struct Active {
        let memory: GuestMemoryAccess
        var queues: [SplitVirtqueue]
        let interrupt: VirtioInterrupt
        let features: UInt64
        var broken = false
    }

    private struct State {
        var cols: UInt16
        var rows: UInt16
        var active: Active?
        var input: [UInt8] = []
        var inputStart = 0 // bytes of `input` already delivered
        var dmaFailures: UInt64 = 0
        var pendingInput: Int { input.count - inputStart }
    }

    private let output: ConsoleOutput
    private let queueSize: UInt16
    private let inputCapacity: Int
    private let state: Mutex<State>

    public init(output: ConsoleOutput, cols: UInt16 = 80, rows: UInt16 = 25,
                queueSize: UInt16 = VirtioConsole.defaultQueueSize,
                inputCapacity: Int = VirtioConsole.defaultInputCapacity) {
        self.output = output
        self.queueSize = queueSize
        self.inputCapacity = max(1, inputCapacity)
        state = Mutex(State(cols: cols, rows: rows))
    }

    /// Buffers the device could not reach (behind a vIOMMU).
    public var dmaFailures: UInt64 { state.withLock { $0.dmaFailures } }

    public var deviceType: UInt16 { VirtioSpec.DeviceType.console }
    public var deviceFeatures: UInt64 { Self.featureSize | Self.featureEmergencyWrite }
    public var queueMaxSizes: [UInt16] { [queueSize, queueSize] }
    public var configSize: Int { ConfigOffset.size }

    public func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        let (cols, rows) = state.withLock { ($0.cols, $0.rows) }
        var image = [UInt8](repeating: 0, count: ConfigOffset.size)
        image[ConfigOffset.cols] = UInt8(truncatingIfNeeded: cols)
        image[ConfigOffset.cols + 1] = UInt8(truncatingIfNeeded: cols >> 8)
        image[ConfigOffset.rows] = UInt8(truncatingIfNeeded: rows)
        image[ConfigOffset.rows + 1] = UInt8(truncatingIfNeeded: rows >> 8)
        image[ConfigOffset.maxPorts] = 1 // valid only with MULTIPORT; 1 port regardless
        copyConfig(image, offset: offset, into: data) // emerg_wr reads as 0
    }

    /// Only `emerg_wr` is writable: its low byte goes to the output (§5.3.5.1:
    /// "The device SHOULD transmit the lower byte written to emerg_wr").
    public func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {
        guard offset == ConfigOffset.emergencyWrite, data.count >= 1 else { return }
        let byte = data[0]
        state.withLock { _ in output.write([byte]) }
    }

    public func activate(memory: GuestMemoryAccess, features: UInt64, queues: [SplitVirtqueue],
                         interrupt: VirtioInterrupt) throws {
        guard queues.count == 2 else { throw VirtqueueError.device("console device needs exactly 2 queues") }
        state.withLock { s in
            s.active = Active(memory: memory, queues: queues, interrupt: interrupt, features: features)
            // Output first, then any input typed before the driver was ready.
            process(&s)
        }
    }

    /// Drops the queues. Input not yet delivered is kept for the next driver.
    public func reset() {
        state.withLock { $0.active = nil }
    }

    public func queueNotified(_ index: Int) {
        guard index == Self.receiveQueue || index == Self.transmitQueue else { return }
        state.withLock { process(&$0) }
    }

    /// Offers host input to the guest; returns how many bytes were taken (the
    /// caller keeps the rest and retries later). Bytes are delivered as soon
    /// as the driver has posted receive buffers.
    @discardableResult
    public func enqueueInput(_ bytes: [UInt8]) -> Int {
        state.withLock { s in
            compactInput(&s)
            let n = min(bytes.count, inputCapacity - s.pendingInput)
            guard n > 0 else { return 0 }
            s.input += bytes[0..<n]
            process(&s)
            return n
        }
    }

    /// How many more bytes `enqueueInput` would take now.
    public var inputSpace: Int { state.withLock { inputCapacity - $0.pendingInput } }

    /// Changes the console size; sends a configuration change notification
    /// when the driver negotiated VIRTIO_CONSOLE_F_SIZE (§5.3.6).
    public func setSize(cols: UInt16, rows: UInt16) {
        state.withLock { s in
            guard s.cols != cols || s.rows != rows else { return }
            s.cols = cols
            s.rows = rows
            if let a = s.active, !a.broken, a.features & Self.featureSize != 0 {
                a.interrupt.signalConfigChange()
            }
        }
    }

    private func compactInput(_ s: inout State) {
        if s.inputStart > 0 {
            s.input.removeFirst(s.inputStart)
            s.inputStart = 0
        }
    }

    /// Drains the transmit queue, then fills receive buffers with pending input.
    private func process(_ s: inout State) {
        guard var a = s.active, !a.broken else { return }
        do {
            var signal = [false, false]
            while let chain = try a.queues[Self.transmitQueue].popAvailable(memory: a.memory) {
                try chain.requireReadableOnly()
                do {
                    try transmit(chain, memory: a.memory)
                } catch VirtqueueError.memory {
                    // Out of reach (behind a vIOMMU; reported as a DMA fault):
                    // the rest of this buffer is dropped.
                    s.dmaFailures &+= 1
                }
                try a.queues[Self.transmitQueue].addUsed(head: chain.head, len: 0, memory: a.memory)
                signal[Self.transmitQueue] = true
            }
            while s.pendingInput > 0, let chain = try a.queues[Self.receiveQueue].popAvailable(memory: a.memory) {
                try chain.requireWritableOnly()
                let n = Int(min(chain.writableLength, UInt64(s.pendingInput)))
                var written = 0
                do {
                    written = try chain.writeWritable(Array(s.input[s.inputStart..<(s.inputStart + n)]), memory: a.memory)
                } catch VirtqueueError.memory {
                    // Out of reach: the buffer comes back empty and the
                    // input waits for the next one.
                    s.dmaFailures &+= 1
                }
                s.inputStart += written
                try a.queues[Self.receiveQueue].addUsed(head: chain.head, len: UInt32(clamping: written), memory: a.memory)
                signal[Self.receiveQueue] = true
            }
            if s.pendingInput == 0 {
                s.input.removeAll(keepingCapacity: true)
                s.inputStart = 0
            }
            for q in [Self.transmitQueue, Self.receiveQueue] where signal[q] {
                if try a.queues[q].needsNotification(memory: a.memory) {
                    a.interrupt.signalUsedQueue(q)
                }
            }
        } catch {
            a.broken = true
            a.interrupt.deviceNeedsReset(after: error)
        }
        s.active = a
    }

    private func transmit(_ chain: DescriptorChain, memory: GuestMemoryAccess) throws {
        for segment in chain.segments {
            var done: UInt64 = 0
            let length = UInt64(segment.length)
            while done < length {
                let n = Int(min(length - done, UInt64(Self.transmitChunk)))
                // Inside the segment, which popAvailable checked: no overflow.
                let bytes: [UInt8]
                do {
                    bytes = try memory.readBytes(at: GuestAddress(segment.address.raw + done), count: n)
                } catch {
                    throw VirtqueueError.memory("\(error)")
                }
                output.write(bytes)
                done += UInt64(n)
            }
        }
    }
}
