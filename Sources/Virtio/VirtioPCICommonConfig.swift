import Bits

/// The virtio-pci common configuration registers (virtio 1.2 §4.1.4.3,
/// `struct virtio_pci_common_cfg`) as a plain value: the transport keeps one
/// behind its lock and turns the returned `Effect`s into device calls after
/// dropping it. Nothing here trusts the guest: any offset and width may be
/// read, unknown or misaligned writes are ignored.
struct VirtioPCICommonConfig {
    /// Field offsets (§4.1.4.3).
    enum Offset {
        static let deviceFeatureSelect = 0x00 // le32 RW
        static let deviceFeature = 0x04       // le32 RO
        static let driverFeatureSelect = 0x08 // le32 RW
        static let driverFeature = 0x0C       // le32 RW
        static let configMSIXVector = 0x10    // le16 RW
        static let numQueues = 0x12           // le16 RO
        static let deviceStatus = 0x14        // u8 RW
        static let configGeneration = 0x15    // u8 RO
        static let queueSelect = 0x16         // le16 RW
        static let queueSize = 0x18           // le16 RW
        static let queueMSIXVector = 0x1A     // le16 RW
        static let queueEnable = 0x1C         // le16 RW
        static let queueNotifyOff = 0x1E      // le16 RO
        static let queueDesc = 0x20           // le64 RW
        static let queueDriver = 0x28         // le64 RW
        static let queueDevice = 0x30         // le64 RW
        static let queueNotifyData = 0x38     // le16 RO
        static let queueReset = 0x3A          // le16 RW
        /// Size of the structure.
        static let size = 0x3C
    }

    struct Queue: Equatable {
        let maxSize: UInt16
        var size: UInt16
        var msixVector = VirtioSpec.PCI.noVector
        var enabled = false
        var descriptorTable: UInt64 = 0
        var availRing: UInt64 = 0
        var usedRing: UInt64 = 0

        init(maxSize: UInt16) {
            self.maxSize = maxSize
            size = maxSize // "On reset, specifies the maximum queue size" (§4.1.4.3)
        }
    }

    /// What a write asks the transport to do.
    enum Effect: Equatable {
        /// 0 was written to `device_status`: reset the device (§2.4, §4.1.4.3.1).
        case reset
        /// DRIVER_OK was set: build the queues and activate the device.
        case driverOK
        /// The driver broke the initialization sequence (§3.1.1).
        case guestError(String)
    }

    let offeredFeatures: UInt64
    /// MSI-X table size; vectors at or above it are refused (§4.1.5.1.2.1).
    let msixVectors: Int

    var deviceFeatureSelect: UInt32 = 0
    var driverFeatureSelect: UInt32 = 0
    var driverFeatures: UInt64 = 0
    var configMSIXVector = VirtioSpec.PCI.noVector
    var status: UInt8 = 0
    var configGeneration: UInt8 = 0
    var queueSelect: UInt16 = 0
    var queues: [Queue]

    init(offeredFeatures: UInt64, queueMaxSizes: [UInt16], msixVectors: Int) {
        self.offeredFeatures = offeredFeatures
        self.msixVectors = msixVectors
        queues = queueMaxSizes.map { Queue(maxSize: $0) }
    }

    /// Back to the state after power-on, keeping `config_generation` moving
    /// forward so a driver never sees an old value come back.
    mutating func reset() {
        let generation = configGeneration
        self = VirtioPCICommonConfig(offeredFeatures: offeredFeatures, queueMaxSizes: queues.map(\.maxSize),
                                     msixVectors: msixVectors)
        configGeneration = generation &+ 1
    }

    var isDriverOK: Bool { status & VirtioSpec.Status.driverOK != 0 }
    var needsReset: Bool { status & VirtioSpec.Status.deviceNeedsReset != 0 }

    /// The features the driver accepted, once FEATURES_OK stuck.
    var negotiatedFeatures: UInt64 { driverFeatures & offeredFeatures }

    private var selectedQueue: Int? {
        let i = Int(queueSelect)
        return i < queues.count ? i : nil
    }

    // MARK: - Reads

    /// The structure as the driver sees it now, little-endian.
    func image() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: Offset.size)
        func put(_ v: UInt64, _ at: Int, _ width: Int) {
            b.replaceSubrange(at..<(at + width), with: LE.bytes(v, count: width))
        }
        // §4.1.4.3.1: feature bits from device_feature_select * 32; 0 past bit 63.
        let dsel = UInt64(deviceFeatureSelect)
        put(dsel, Offset.deviceFeatureSelect, 4)
        put(dsel < 2 ? (offeredFeatures >> (32 * dsel)) & 0xFFFF_FFFF : 0, Offset.deviceFeature, 4)
        let rsel = UInt64(driverFeatureSelect)
        put(rsel, Offset.driverFeatureSelect, 4)
        put(rsel < 2 ? (driverFeatures >> (32 * rsel)) & 0xFFFF_FFFF : 0, Offset.driverFeature, 4)
        put(UInt64(configMSIXVector), Offset.configMSIXVector, 2)
        put(UInt64(queues.count), Offset.numQueues, 2)
        put(UInt64(status), Offset.deviceStatus, 1)
        put(UInt64(configGeneration), Offset.configGeneration, 1)
        put(UInt64(queueSelect), Offset.queueSelect, 2)
        if let i = selectedQueue {
            let q = queues[i]
            put(UInt64(q.size), Offset.queueSize, 2)
            put(UInt64(q.msixVector), Offset.queueMSIXVector, 2)
            put(q.enabled ? 1 : 0, Offset.queueEnable, 2)
            put(UInt64(i), Offset.queueNotifyOff, 2) // queue i notifies at i * multiplier
            put(q.descriptorTable, Offset.queueDesc, 8)
            put(q.availRing, Offset.queueDriver, 8)
            put(q.usedRing, Offset.queueDevice, 8)
            put(UInt64(i), Offset.queueNotifyData, 2)
        } else {
            // "A 0 means the queue is unavailable" (§4.1.4.3); unmapped vector.
            put(UInt64(VirtioSpec.PCI.noVector), Offset.queueMSIXVector, 2)
        }
        // queue_reset reads 0: VIRTIO_F_RING_RESET is not offered.
        return b
    }

    func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        let b = image()
        for i in 0..<data.count {
            let (o, overflow) = offset.addingReportingOverflow(UInt64(i))
            data[i] = (!overflow && o < UInt64(b.count)) ? b[Int(o)] : 0
        }
    }

    // MARK: - Writes

    /// Applies a driver write. Accepted: a write of a field's exact width at
    /// its offset, and 32-bit halves of the 64-bit queue addresses (drivers
    /// that cannot do 64-bit accesses split them, §4.1.3.1). Everything else
    /// is ignored, as are writes to read-only fields.
    mutating func write(offset: UInt64, data: UnsafeRawBufferPointer) -> Effect? {
        guard offset < UInt64(Offset.size), let width = [1, 2, 4, 8].first(where: { $0 == data.count }) else {
            return nil
        }
        let value = LE.load(data)
        let o = Int(offset)
        switch (o, width) {
        case (Offset.deviceFeatureSelect, 4):
            deviceFeatureSelect = UInt32(truncatingIfNeeded: value)
        case (Offset.driverFeatureSelect, 4):
            driverFeatureSelect = UInt32(truncatingIfNeeded: value)
        case (Offset.driverFeature, 4):
            writeDriverFeatures(UInt32(truncatingIfNeeded: value))
        case (Offset.configMSIXVector, 2):
            configMSIXVector = checkedVector(UInt16(truncatingIfNeeded: value))
        case (Offset.deviceStatus, 1):
            return writeStatus(UInt8(truncatingIfNeeded: value))
        case (Offset.queueSelect, 2):
            queueSelect = UInt16(truncatingIfNeeded: value)
        case (Offset.queueSize, 2):
            updateQueue { q in
                let v = UInt16(truncatingIfNeeded: value)
                // Any power of 2 from 1 to the maximum (§2.7, §4.1.4.3.2);
                // anything else is ignored and the old value reads back.
                if v > 0, v <= q.maxSize, v & (v &- 1) == 0 { q.size = v }
            }
        case (Offset.queueMSIXVector, 2):
            // Allowed while live: Linux re-targets vectors after DRIVER_OK.
            if let i = selectedQueue { queues[i].msixVector = checkedVector(UInt16(truncatingIfNeeded: value)) }
        case (Offset.queueEnable, 2):
            // "The driver MUST NOT write a 0 to queue_enable" (§4.1.4.3.2): only 1 counts.
            if value == 1 { updateQueue { $0.enabled = true } }
        case (Offset.queueDesc, _), (Offset.queueDesc + 4, 4):
            writeAddress(o - Offset.queueDesc, width, value) { $0.descriptorTable } set: { $0.descriptorTable = $1 }
        case (Offset.queueDriver, _), (Offset.queueDriver + 4, 4):
            writeAddress(o - Offset.queueDriver, width, value) { $0.availRing } set: { $0.availRing = $1 }
        case (Offset.queueDevice, _), (Offset.queueDevice + 4, 4):
            writeAddress(o - Offset.queueDevice, width, value) { $0.usedRing } set: { $0.usedRing = $1 }
        default:
            break // read-only (device_feature, num_queues, config_generation,
                  // queue_notify_off, queue_notify_data), queue_reset, or odd widths
        }
        return nil
    }

    /// A vector the MSI-X table has, or NO_VECTOR: "Devices MUST report
    /// mapping failures by returning the NO_VECTOR value" (§4.1.5.1.2.1).
    private func checkedVector(_ v: UInt16) -> UInt16 {
        v != VirtioSpec.PCI.noVector && Int(v) < msixVectors ? v : VirtioSpec.PCI.noVector
    }

    /// Queue fields are frozen once the queue is enabled or the device is
    /// live (§4.1.4.3.2: the driver configures a queue before enabling it).
    private mutating func updateQueue(_ body: (inout Queue) -> Void) {
        guard let i = selectedQueue, !queues[i].enabled, !isDriverOK else { return }
        body(&queues[i])
    }

    private mutating func writeAddress(_ part: Int, _ width: Int, _ value: UInt64,
                                       get: (Queue) -> UInt64, set: (inout Queue, UInt64) -> Void) {
        guard (part == 0 && (width == 4 || width == 8)) || (part == 4 && width == 4) else { return }
        updateQueue { q in
            let old = get(q)
            switch (part, width) {
            case (0, 8): set(&q, value)
            case (0, _): set(&q, (old & 0xFFFF_FFFF_0000_0000) | value)
            default: set(&q, (old & 0xFFFF_FFFF) | (value << 32))
            }
        }
    }

    /// "The driver MUST NOT accept new feature bits after" FEATURES_OK (§3.1.1):
    /// such writes are ignored. Bits are mirrored as written (§4.1.4.3.1 allows
    /// it) and checked when FEATURES_OK is set.
    private mutating func writeDriverFeatures(_ word: UInt32) {
        guard status & VirtioSpec.Status.featuresOK == 0, driverFeatureSelect < 2 else { return }
        let shift = UInt64(driverFeatureSelect) * 32
        driverFeatures = (driverFeatures & ~(0xFFFF_FFFF << shift)) | (UInt64(word) << shift)
    }

    /// `device_status` (§2.1, §3.1.1, §4.1.4.3.1):
    /// - 0 resets the device;
    /// - the driver cannot clear bits, nor set DEVICE_NEEDS_RESET (the device's);
    /// - FEATURES_OK only sticks when the driver accepted a subset of the
    ///   offered features including VIRTIO_F_VERSION_1 (§2.2.2, §6.2); the
    ///   driver sees it missing on its re-read and gives up (§3.1.1 step 6);
    /// - DRIVER_OK activates the device, and needs FEATURES_OK first.
    private mutating func writeStatus(_ value: UInt8) -> Effect? {
        guard value != 0 else { return .reset }
        let old = status
        var requested = value & ~VirtioSpec.Status.deviceNeedsReset
        let newlySet = requested & ~old
        if newlySet & VirtioSpec.Status.featuresOK != 0 {
            let acceptable = driverFeatures & ~offeredFeatures == 0
                && driverFeatures & VirtioSpec.Feature.version1 != 0
            if !acceptable { requested &= ~VirtioSpec.Status.featuresOK }
        }
        var effect: Effect?
        if newlySet & VirtioSpec.Status.driverOK != 0 {
            if (old | requested) & VirtioSpec.Status.featuresOK == 0 {
                requested &= ~VirtioSpec.Status.driverOK
                effect = .guestError("DRIVER_OK set without FEATURES_OK")
            } else {
                effect = .driverOK
            }
        }
        status = old | requested
        return effect
    }
}
