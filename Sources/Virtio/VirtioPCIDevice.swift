import Bits
import Devices
import GuestMemory
import PCI
import Synchronization

/// A virtio device on PCI, modern interface only (virtio 1.2 §4.1): vendor
/// 0x1AF4, device 0x1040 + type, revision 1, no legacy I/O BAR.
///
/// Everything lives in BAR 0, a 32 KiB 64-bit prefetchable memory BAR (as
/// QEMU's modern virtio BAR), one structure per 4 KiB page:
///
/// | BAR 0 offset | Structure | Capability (`cfg_type`) |
/// |---|---|---|
/// | 0x0000 | common configuration, 0x3C bytes (§4.1.4.3) | COMMON 1 |
/// | 0x1000 | ISR status, 1 byte, read clears (§4.1.4.5) | ISR 3 |
/// | 0x2000 | device-specific configuration (§4.1.4.6) | DEVICE 4 (if any) |
/// | 0x3000 | notifications: queue *i* at 0x3000 + 4*i (§4.1.4.4) | NOTIFY 2, multiplier 4 |
/// | 0x4000 | MSI-X table, queues + 1 vectors | (MSI-X capability) |
/// | 0x5000 | MSI-X PBA | |
///
/// A PCI_CFG (5) capability gives the alternative config-space window into
/// BAR 0 (§4.1.4.9). MSI-X vector 0..n-1 may be mapped to any queue or the
/// configuration change; without MSI-X the ISR and INTx pin A are used.
///
/// The transport owns device status, feature negotiation and queue
/// configuration (`VirtioPCICommonConfig`); at DRIVER_OK it checks each
/// enabled queue's size and rings and calls the device's `activate`. A guest
/// error (from the queue checks, the device, or the initialization
/// sequence) sets DEVICE_NEEDS_RESET, sends a configuration change
/// notification and is passed to `guestErrorHandler` for the VMM's log.
///
/// Locking: a state lock, taken for register accesses and interrupts, and
/// never held while calling the device. Interrupts (ISR, INTx, MSI-X) are
/// raised with it held so an ISR read and an assertion cannot interleave;
/// the PCI function and MSI-X table locks come after it, and neither calls
/// back into the transport. A transition lock serializes common-config
/// writes with the reset or activation they cause (order: transition ->
/// device -> state), so a reset racing a DRIVER_OK on another vCPU cannot
/// leave the device active behind the transport's back.
// @unchecked Sendable: restated from PCIFunction (an open class, which the
// compiler cannot check). This subclass's own state is the `state`,
// `transitions` and `notifySink` Mutexes and `let`s of Sendable types (the
// device, guest memory, the @Sendable error handler, sizes).
public final class VirtioPCIDevice: PCIFunction, @unchecked Sendable {
    /// BAR 0 layout (see the type's documentation).
    public enum Layout {
        public static let bar = 0
        public static let barSize: UInt64 = 0x8000
        public static let commonOffset: UInt64 = 0x0000
        public static let isrOffset: UInt64 = 0x1000
        public static let deviceConfigOffset: UInt64 = 0x2000
        public static let notifyOffset: UInt64 = 0x3000
        public static let msixTableOffset: UInt64 = 0x4000
        public static let msixPBAOffset: UInt64 = 0x5000
        public static let regionSize: UInt64 = 0x1000
        /// `notify_off_multiplier`: an even power of 2 (§4.1.4.4.1); queue i
        /// has `queue_notify_off` i.
        public static let notifyMultiplier: UInt64 = 4
        /// Queues whose notify slots and MSI-X entries fit their page.
        public static let maxQueues = 255
    }

    /// QEMU's subsystem IDs (vendor Red Hat/Qumranet, device 0x1100): at least
    /// 0x40, as §4.1.2.1 asks of non-transitional devices.
    public static let subsystemVendorID: UInt16 = 0x1AF4
    public static let subsystemID: UInt16 = 0x1100

    /// The PCI class code for a device type, as QEMU assigns them: console
    /// "communication, other" 0x078000; everything else "unclassified" 0xFF0000.
    public static func classCode(forDeviceType type: UInt16) -> UInt32 {
        // The classes QEMU's virtio-*-pci devices report (hw/virtio/virtio-*-pci.c),
        // so guests and tools see what they expect: block = mass storage (SCSI),
        // net = Ethernet, console = other communication, the rest = unassigned.
        switch type {
        case VirtioSpec.DeviceType.block: return 0x01_00_00
        case VirtioSpec.DeviceType.network: return 0x02_00_00
        case VirtioSpec.DeviceType.console: return 0x07_80_00
        default: return 0xFF_00_00
        }
    }

    private struct State {
        var common: VirtioPCICommonConfig
        var isr: UInt8 = 0
        /// Bumped at every activation and reset; interrupts from an older
        /// activation are dropped.
        var epoch: UInt64 = 0
        var active = false
        /// 0 was written to device_status and the device has not finished
        /// its reset (host I/O on the old driver's buffers still in flight):
        /// device_status still reads the old value, and common-config writes
        /// are ignored until the reset is done.
        var resetting = false
    }

    public let device: VirtioDevice
    private let memory: GuestMemoryAccess
    private let guestErrorHandler: @Sendable (VirtqueueError) -> Void
    private let state: Mutex<State>
    /// Serializes common-config writes and the status transitions they
    /// trigger (reset, activation), which call into the device.
    private let transitions = Mutex<Void>(())
    /// Where notify writes that arrive as BAR accesses go (`routeNotifyWrites`).
    private let notifySink = Mutex<(@Sendable (Int) -> Void)?>(nil)
    private let queueMaxSizes: [UInt16]
    private let configSize: Int
    /// Config-space offset of the PCI_CFG capability.
    public let pciConfigCapabilityOffset: Int

    /// Wraps `device`. `memory` is what the device's queues live in;
    /// `guestErrorHandler` receives every guest error (the VMM logs
    /// "guest error: ..." with the device's address). Throws when the device
    /// has more than `Layout.maxQueues` queues, a queue size that is not a
    /// power of 2 up to 32768, or more than 4 KiB of configuration.
    public init(device: VirtioDevice, memory: GuestMemoryAccess, accessPlatform: Bool = false,
                guestErrorHandler: @escaping @Sendable (VirtqueueError) -> Void = { _ in }) throws {
        let sizes = device.queueMaxSizes
        guard sizes.count <= Layout.maxQueues,
              sizes.allSatisfy({ $0 > 0 && $0 <= VirtioSpec.SplitRing.maxQueueSize && $0 & ($0 - 1) == 0 }),
              device.configSize >= 0, UInt64(device.configSize) <= Layout.regionSize else {
            throw PCIError.invalidCapability(id: UInt16(VirtioSpec.PCI.vendorCapabilityID),
                                             reason: "virtio device type \(device.deviceType): \(sizes.count) queues of sizes \(sizes), \(device.configSize) config bytes")
        }
        self.device = device
        self.memory = memory
        self.guestErrorHandler = guestErrorHandler
        queueMaxSizes = sizes
        configSize = device.configSize
        let vectors = sizes.count + 1 // one per queue plus configuration changes
        // VIRTIO_F_ACCESS_PLATFORM (§6.1) for a device behind a vIOMMU: the
        // driver then gives it IOVAs (Linux: through the DMA API), which
        // `memory` translates.
        let offered = device.deviceFeatures | VirtioSpec.Feature.version1
            | VirtioSpec.Feature.indirectDescriptors | VirtioSpec.Feature.eventIndex
            | (accessPlatform ? VirtioSpec.Feature.accessPlatform : 0)
        state = Mutex(State(common: VirtioPCICommonConfig(offeredFeatures: offered, queueMaxSizes: sizes,
                                                          msixVectors: vectors)))

        var config = PCIConfigSpace.type0(
            vendorID: VirtioSpec.PCI.vendorID,
            deviceID: VirtioSpec.PCI.modernDeviceIDBase &+ device.deviceType,
            classCode: Self.classCode(forDeviceType: device.deviceType),
            revision: VirtioSpec.PCI.revisionID,
            subsystemVendorID: Self.subsystemVendorID, subsystemID: Self.subsystemID,
            interruptPin: .intA)
        try config.setBar(Layout.bar, size: Layout.barSize, kind: .memory64, prefetchable: true)
        let caps = Self.capabilities(queueCount: sizes.count, configSize: device.configSize)
        var pciCfg = 0
        for cap in caps {
            let offset = try config.addCapability(id: VirtioSpec.PCI.vendorCapabilityID, bytes: cap.bytes,
                                                  writableMask: cap.writableMask)
            if cap.bytes[3] == VirtioSpec.PCI.capPCIConfig { pciCfg = offset }
        }
        pciConfigCapabilityOffset = pciCfg
        try super.init(config: config, msix: MSIXConfiguration(
            vectors: vectors, tableBar: Layout.bar, tableOffset: UInt32(Layout.msixTableOffset),
            pbaBar: Layout.bar, pbaOffset: UInt32(Layout.msixPBAOffset)))
    }

    /// The vendor-specific capabilities (§4.1.4): `struct virtio_pci_cap {
    /// u8 cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2]; le32
    /// offset, length; }`, plus `notify_off_multiplier` for NOTIFY and
    /// `pci_cfg_data[4]` for PCI_CFG, whose bar/offset/length/data fields are
    /// writable by the driver (§4.1.4.9).
    static func capabilities(queueCount: Int, configSize: Int) -> [(bytes: [UInt8], writableMask: [UInt8]?)] {
        func cap(_ type: UInt8, _ length: UInt8, _ offset: UInt64, _ size: UInt64) -> [UInt8] {
            [VirtioSpec.PCI.vendorCapabilityID, 0, length, type, UInt8(Layout.bar), 0, 0, 0]
                + LE.bytes(offset, count: 4) + LE.bytes(size, count: 4)
        }
        var out: [(bytes: [UInt8], writableMask: [UInt8]?)] = []
        out.append((cap(VirtioSpec.PCI.capCommonConfig, VirtioSpec.PCI.capLength, Layout.commonOffset,
                        UInt64(VirtioPCICommonConfig.Offset.size)), nil))
        // §4.1.4.4.1: cap.length >= queue_notify_off * multiplier + 2 for every queue.
        let notifyLength = max(UInt64(queueCount) * Layout.notifyMultiplier, 2)
        out.append((cap(VirtioSpec.PCI.capNotifyConfig, VirtioSpec.PCI.notifyCapLength, Layout.notifyOffset, notifyLength)
                        + LE.bytes(Layout.notifyMultiplier, count: 4), nil))
        out.append((cap(VirtioSpec.PCI.capISRConfig, VirtioSpec.PCI.capLength, Layout.isrOffset, 1), nil))
        if configSize > 0 {
            out.append((cap(VirtioSpec.PCI.capDeviceConfig, VirtioSpec.PCI.capLength, Layout.deviceConfigOffset,
                            UInt64(configSize)), nil))
        }
        // PCI_CFG: bar at +4, offset at +8, length at +12, data at +16 are RW.
        var mask = [UInt8](repeating: 0, count: Int(VirtioSpec.PCI.pciConfigCapLength))
        mask[4] = 0xFF
        for i in 8..<20 { mask[i] = 0xFF }
        out.append((cap(VirtioSpec.PCI.capPCIConfig, VirtioSpec.PCI.pciConfigCapLength, 0, 0) + [0, 0, 0, 0], mask))
        return out
    }

    // MARK: - For the VMM

    /// Where the driver writes to notify queue `index`: BAR and offset in it
    /// (`cap.offset + queue_notify_off * notify_off_multiplier`, §4.1.4.4).
    /// The VMM registers a 2-byte KVM ioeventfd there (no datamatch needed:
    /// each queue has its own address) and calls `notifyQueue(_:)` when it
    /// fires. Nil for a queue the device does not have.
    public func notifyAddress(forQueue index: Int) -> (bar: Int, offset: UInt64)? {
        guard index >= 0, index < queueMaxSizes.count else { return nil }
        return (Layout.bar, Layout.notifyOffset + UInt64(index) * Layout.notifyMultiplier)
    }

    /// An available buffer notification for queue `index`, from a notify
    /// write or an ioeventfd. Ignored unless the device is live and healthy.
    public func notifyQueue(_ index: Int) {
        let deliver = state.withLock { s in
            s.active && !s.common.needsReset && index >= 0 && index < s.common.queues.count
                && s.common.queues[index].enabled
        }
        if deliver { device.queueNotified(index) }
    }

    /// Sends the notify writes that reach BAR 0 (an MMIO exit, when no
    /// ioeventfd took the write, or the PCI_CFG window) to `sink` with the
    /// queue index, instead of calling `notifyQueue` on the writing vCPU
    /// thread. The VMM passes them to the device's I/O thread, which also
    /// serves its ioeventfds, so every notification of a device is handled
    /// on one thread and a vCPU never waits for the device's I/O. Indices
    /// past the device's queues are dropped here, as `notifyQueue` would.
    public func routeNotifyWrites(to sink: @escaping @Sendable (Int) -> Void) {
        notifySink.withLock { $0 = sink }
    }

    /// The device status byte (§2.1).
    public var deviceStatus: UInt8 { state.withLock { $0.common.status } }
    /// True between a successful activation and the next reset.
    public var isActive: Bool { state.withLock { $0.active } }
    /// The feature bits offered to the driver.
    public var offeredFeatures: UInt64 { state.withLock { $0.common.offeredFeatures } }
    /// The features negotiated (meaningful once FEATURES_OK is set).
    public var negotiatedFeatures: UInt64 { state.withLock { $0.common.negotiatedFeatures } }

    // MARK: - BAR 0

    public override func readBarContents(_ index: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count { data[i] = 0 }
        guard index == Layout.bar else { return }
        let region = offset / Layout.regionSize
        let rel = offset % Layout.regionSize
        switch region * Layout.regionSize {
        case Layout.commonOffset:
            state.withLock { $0.common.read(offset: rel, data: data) }
        case Layout.isrOffset:
            guard rel == 0, data.count > 0 else { return }
            data[0] = readAndClearISR()
        case Layout.deviceConfigOffset:
            guard let o = Int(exactly: rel), o <= configSize, data.count <= configSize - o else { return }
            device.readConfig(offset: o, data: data)
        default:
            break // notify region and unused pages read 0
        }
    }

    public override func writeBarContents(_ index: Int, offset: UInt64, data: UnsafeRawBufferPointer) {
        guard index == Layout.bar else { return }
        let region = offset / Layout.regionSize
        let rel = offset % Layout.regionSize
        switch region * Layout.regionSize {
        case Layout.commonOffset:
            transitions.withLock { _ in
                let effect = state.withLock { s in s.resetting ? nil : s.common.write(offset: rel, data: data) }
                if let e = effect { perform(e) }
            }
        case Layout.deviceConfigOffset:
            guard let o = Int(exactly: rel), o <= configSize, data.count <= configSize - o else { return }
            device.writeConfig(offset: o, data: data)
        case Layout.notifyOffset:
            // §4.1.5.2: the driver writes the queue index to the queue's
            // address; the address alone identifies the queue here.
            guard data.count > 0, rel % Layout.notifyMultiplier == 0 else { return }
            let queue = Int(rel / Layout.notifyMultiplier)
            if let sink = notifySink.withLock({ $0 }) {
                if queue < queueMaxSizes.count { sink(queue) }
            } else {
                notifyQueue(queue)
            }
        default:
            break // ISR and unused pages: read-only / ignored
        }
    }

    /// "simply reading this register resets it to 0 and causes the device to
    /// de-assert the interrupt" (§4.1.4.5).
    private func readAndClearISR() -> UInt8 {
        state.withLock { s in
            let v = s.isr
            s.isr = 0
            if v != 0 { setINTx(false) }
            return v
        }
    }

    // MARK: - Status transitions

    private func perform(_ effect: VirtioPCICommonConfig.Effect) {
        switch effect {
        case .reset:
            // Stop the device first, then show status 0: "The device MUST
            // reset when 0 is written to device_status, and present a 0 in
            // device_status once that is done" (§4.1.4.3.1). A device with
            // host I/O in flight finishes later, on its I/O thread; the
            // driver polls device_status until it reads 0 (Linux's
            // vp_modern_reset does), and the vCPU goes back to the guest now.
            state.withLock { s in
                s.epoch &+= 1
                s.active = false
                s.resetting = true
            }
            device.reset { [weak self] in self?.resetDone() }
        case .driverOK:
            activate()
        case let .guestError(message):
            needsReset(.transport(message), epoch: nil)
        }
    }

    /// The device has reset: status 0, the common configuration as at
    /// power-on, no interrupt pending.
    private func resetDone() {
        state.withLock { s in
            s.common.reset()
            s.isr = 0
            setINTx(false)
            s.resetting = false
        }
    }

    /// Builds and checks the queues the driver configured, then activates
    /// the device with them.
    private func activate() {
        let (snapshot, features, epoch) = state.withLock { s -> ([VirtioPCICommonConfig.Queue], UInt64, UInt64) in
            s.epoch &+= 1
            return (s.common.queues, s.common.negotiatedFeatures, s.epoch)
        }
        var queues: [SplitVirtqueue] = []
        do {
            for q in snapshot {
                guard q.enabled else {
                    queues.append(.disabled())
                    continue
                }
                queues.append(try SplitVirtqueue(size: q.size, maxSize: q.maxSize,
                                                 descriptorTable: GuestAddress(q.descriptorTable),
                                                 availRing: GuestAddress(q.availRing),
                                                 usedRing: GuestAddress(q.usedRing),
                                                 features: features, memory: memory))
            }
        } catch {
            needsReset(error as? VirtqueueError ?? .transport("\(error)"), epoch: epoch)
            return
        }
        // Live before `activate` returns, so a notification racing with it
        // reaches the device (which ignores it until it is active).
        let current = state.withLock { s -> Bool in
            guard s.epoch == epoch else { return false }
            s.active = true
            return true
        }
        guard current else { return }
        do {
            try device.activate(memory: memory, features: features, queues: queues,
                                interrupt: Interrupt(transport: self, epoch: epoch))
        } catch {
            state.withLock { s in if s.epoch == epoch { s.active = false } }
            device.reset()
            needsReset(error as? VirtqueueError ?? .device("\(error)"), epoch: epoch)
        }
    }

    /// DEVICE_NEEDS_RESET (§2.1.2): set the bit, tell the VMM, and send a
    /// configuration change notification if the driver is past DRIVER_OK.
    /// `epoch` nil: applies whatever the activation state.
    fileprivate func needsReset(_ error: VirtqueueError, epoch: UInt64?) {
        let applied = state.withLock { s -> Bool in
            guard epoch == nil || epoch == s.epoch else { return false }
            s.common.status |= VirtioSpec.Status.deviceNeedsReset
            if s.common.isDriverOK { raiseConfigInterrupt(&s) }
            return true
        }
        if applied { guestErrorHandler(error) }
    }

    // MARK: - Interrupts (transport lock held)

    private var msixEnabled: Bool { msix?.isEnabled ?? false }

    /// The MSI-X vector the driver gave queue `index`, when MSI-X is on and
    /// the queue has one (§4.1.5.3): a kernel data path may signal it
    /// directly (the VMM's irqfd for it). Nil: interrupts for the queue go
    /// through `VirtioInterrupt` (INTx and the ISR, or none at all).
    public func msixVector(forQueue index: Int) -> Int? {
        state.withLock { s in
            guard msixEnabled, index >= 0, index < s.common.queues.count else { return nil }
            let v = s.common.queues[index].msixVector
            return v == VirtioSpec.PCI.noVector ? nil : Int(v)
        }
    }

    fileprivate func signalQueue(_ index: Int, epoch: UInt64) {
        state.withLock { s in
            guard s.epoch == epoch, s.active, index >= 0, index < s.common.queues.count else { return }
            if msixEnabled {
                // §4.1.5.3: MSI-X with NO_VECTOR means no interrupt at all.
                let v = s.common.queues[index].msixVector
                if v != VirtioSpec.PCI.noVector { signalMSIX(vector: Int(v)) }
            } else {
                s.isr |= VirtioSpec.PCI.isrQueue
                setINTx(true)
            }
        }
    }

    fileprivate func signalConfig(epoch: UInt64) {
        state.withLock { s in
            guard s.epoch == epoch, s.active else { return }
            raiseConfigInterrupt(&s)
        }
    }

    /// §4.1.4.5.1: the Device Configuration Interrupt bit is set before the
    /// notification, MSI-X or not; §4.1.5.4 picks MSI-X or INTx. The
    /// generation moves so a driver re-reading the config sees the change
    /// (§4.1.4.3.1).
    private func raiseConfigInterrupt(_ s: inout State) {
        s.common.configGeneration &+= 1
        s.isr |= VirtioSpec.PCI.isrConfig
        if msixEnabled {
            let v = s.common.configMSIXVector
            if v != VirtioSpec.PCI.noVector { signalMSIX(vector: Int(v)) }
        } else {
            setINTx(true)
        }
    }

    // MARK: - PCI_CFG window (§4.1.4.9)

    private var pciCfgData: Int { pciConfigCapabilityOffset + 16 }

    /// The access the PCI_CFG capability describes now, if it is one the
    /// driver may make: BAR 0, 1/2/4 bytes, aligned, inside the BAR.
    private func pciCfgAccess() -> (offset: UInt64, length: Int)? {
        let cap = pciConfigCapabilityOffset
        let (bar, offset, length) = withConfig { c in (c.read8(cap + 4), c.read32(cap + 8), c.read32(cap + 12)) }
        guard Int(bar) == Layout.bar, [1, 2, 4].contains(length), offset % length == 0,
              UInt64(offset) + UInt64(length) <= Layout.barSize else { return nil }
        return (UInt64(offset), Int(length))
    }

    public override func configWillRead(offset: Int, count: Int) {
        guard pciConfigCapabilityOffset > 0, rangesOverlap(offset, count, pciCfgData, 4),
              let access = pciCfgAccess() else { return }
        var bytes = [UInt8](repeating: 0, count: 4)
        bytes.withUnsafeMutableBytes { readBar(Layout.bar, offset: access.offset, data: UnsafeMutableRawBufferPointer(rebasing: $0[0..<access.length])) }
        let value = UInt32(truncatingIfNeeded: bytes.withUnsafeBytes { LE.load($0) })
        withConfig { $0.set32(pciCfgData, value) }
    }

    public override func configDidWrite(offset: Int, count: Int) {
        guard pciConfigCapabilityOffset > 0, rangesOverlap(offset, count, pciCfgData, 4),
              let access = pciCfgAccess() else { return }
        let value = withConfig { $0.read32(pciCfgData) }
        let bytes = LE.bytes(UInt64(value), count: access.length)
        bytes.withUnsafeBytes { writeBar(Layout.bar, offset: access.offset, data: $0) }
    }

    // MARK: - The interrupt handed to the device

    /// One per activation: holds the transport weakly (the device keeps it
    /// while active) and carries the activation's epoch, so a device that
    /// signals after a reset is ignored.
    private final class Interrupt: VirtioInterrupt {
        weak let transport: VirtioPCIDevice?
        let epoch: UInt64

        init(transport: VirtioPCIDevice, epoch: UInt64) {
            self.transport = transport
            self.epoch = epoch
        }

        func signalUsedQueue(_ index: Int) { transport?.signalQueue(index, epoch: epoch) }
        func signalConfigChange() { transport?.signalConfig(epoch: epoch) }
        func deviceNeedsReset(_ error: VirtqueueError) { transport?.needsReset(error, epoch: epoch) }
    }
}
