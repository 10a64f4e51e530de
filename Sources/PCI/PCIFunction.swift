import Bits
import Devices
import Synchronization

/// A reusable PCI function: config space behind a lock, MSI-X table and PBA
/// routing, MSI, INTx with Interrupt Disable. A device subclasses it and
/// implements only its BAR contents (`readBarContents` / `writeBarContents`),
/// plus, if it needs them, the config hooks.
///
/// ```swift
/// final class MyDevice: PCIFunction {
///     init() throws {
///         var c = PCIConfigSpace.type0(vendorID: 0x1AF4, deviceID: 0x1041, classCode: 0x02_00_00,
///                                      interruptPin: .intA)
///         try c.setBar(0, size: 0x4000, kind: .memory64, prefetchable: true)
///         try super.init(config: c, msix: MSIXConfiguration(vectors: 3, tableBar: 0, tableOffset: 0x2000,
///                                                           pbaBar: 0, pbaOffset: 0x3000))
///     }
///     override func readBarContents(_ index: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer) { ... }
/// }
/// ```
///
/// Locking: one lock for config space. MSI-X and MSI have their own locks
/// and are called with the config lock held (order: config -> MSI(-X) ->
/// router), so Message Control writes reach the table in the guest's order.
/// The INTx line is driven with the config lock held. The hooks and the BAR
/// content methods run without any lock of this class.
///
/// A subclass is shared by vCPU threads like any `PCIDevice`: it restates
/// `@unchecked Sendable` and guards its own stored state (a `Mutex`, or
/// `let`s of Sendable types).
// @unchecked Sendable: an open class cannot be checked Sendable. Its own
// state is a Mutex and `let`s of Sendable types (MSIXTable, MSICapability);
// each subclass answers for its own.
open class PCIFunction: PCIDevice, @unchecked Sendable {
    private struct State {
        var config: PCIConfigSpace
        var address: PCIAddress?
        var intx: InterruptLine?
        var intxAsserted = false
        var intxDriven = false
    }

    private let state: Mutex<State>
    /// The MSI-X table and PBA, when the function has MSI-X. Accesses to them
    /// through `readBar` / `writeBar` are handled here, not by the subclass.
    public let msix: MSIXTable?
    public let msixCapabilityOffset: Int?
    /// The MSI capability, when the function has one.
    public let msi: MSICapability?

    /// A function with neither MSI nor MSI-X.
    public init(config: PCIConfigSpace) {
        msix = nil
        msixCapabilityOffset = nil
        msi = nil
        state = Mutex(State(config: config))
    }

    /// Takes the device's config space and appends the MSI-X and MSI
    /// capabilities to it (after any the device added itself). Throws when
    /// the MSI-X layout does not fit the declared BARs or the capability
    /// area is full.
    public init(config: PCIConfigSpace, msix: MSIXConfiguration?, msi: MSIConfiguration? = nil) throws {
        var c = config
        if let m = msix {
            try m.validate(against: c)
            let cap = MSIXCapability.bytes(for: m)
            msixCapabilityOffset = try c.addCapability(id: PCICapabilityID.msix, bytes: cap.bytes, writableMask: cap.writableMask)
            self.msix = MSIXTable(configuration: m)
        } else {
            msixCapabilityOffset = nil
            self.msix = nil
        }
        if let m = msi {
            let cap = MSICapabilityLayout.bytes(for: m)
            let off = try c.addCapability(id: PCICapabilityID.msi, bytes: cap.bytes, writableMask: cap.writableMask)
            self.msi = MSICapability(configuration: m, offset: off)
        } else {
            self.msi = nil
        }
        state = Mutex(State(config: c))
    }

    // MARK: Subclass surface

    /// Reads BAR contents (everything but the MSI-X table and PBA). Default:
    /// all ones.
    open func readBarContents(_ index: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        fillAllOnes(data)
    }

    /// Writes BAR contents. Default: ignored.
    open func writeBarContents(_ index: Int, offset: UInt64, data: UnsafeRawBufferPointer) {}

    /// Called before a guest config read is served, e.g. to refresh a window
    /// register such as virtio's pci_cfg data through `withConfig`.
    open func configWillRead(offset: Int, count: Int) {}

    /// Called after a guest config write has gone through the masks.
    open func configDidWrite(offset: Int, count: Int) {}

    /// Called at the end of `attached(_:)`.
    open func didAttach(_ context: PCIAttachContext) {}

    /// Locked host access to config space (masks do not apply to `set*`).
    /// Changes made here skip the guest-write side effects (MSI/MSI-X
    /// control, INTx disable).
    public func withConfig<R>(_ body: (inout PCIConfigSpace) -> R) -> R {
        state.withLock { s in body(&s.config) }
    }

    /// The function's address once attached.
    public var address: PCIAddress? { state.withLock { $0.address } }

    /// Sets the function's INTx state. The line is driven only while
    /// Command.INTX_DISABLE is clear; Status.INTERRUPT shows the state either
    /// way (PCI 3.0 §6.2.3). The caller decides whether MSI/MSI-X is in use.
    public func setINTx(_ asserted: Bool) {
        state.withLock { s in
            s.intxAsserted = asserted
            let st = s.config.status
            s.config.set16(PCIReg.status, asserted ? st | PCIStatus.interrupt : st & ~PCIStatus.interrupt)
            Self.driveINTx(&s)
        }
    }

    /// Raises an MSI-X vector (no-op without MSI-X).
    public func signalMSIX(vector: Int) {
        msix?.trigger(vector: vector)
    }

    // MARK: PCIDevice

    public final func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        configWillRead(offset: offset, count: data.count)
        state.withLock { s in
            if let m = msi, m.configuration.perVectorMasking,
               rangesOverlap(offset, data.count, m.offset + MSICapabilityLayout.pendingBits, 4) {
                s.config.set32(m.offset + MSICapabilityLayout.pendingBits, m.pendingRegister)
            }
            s.config.read(offset: offset, data: data)
        }
    }

    public final func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {
        state.withLock { s in
            let oldCommand = s.config.command
            s.config.write(offset: offset, data: data)
            if let t = msix, let cap = msixCapabilityOffset,
               rangesOverlap(offset, data.count, cap + MSIXCapability.messageControl, 2) {
                let control = s.config.read16(cap + MSIXCapability.messageControl)
                t.setControl(enabled: control & MSIXCapability.enable != 0,
                             functionMasked: control & MSIXCapability.functionMask != 0)
            }
            if let m = msi, rangesOverlap(offset, data.count, m.offset, MSICapabilityLayout.length(perVectorMasking: m.configuration.perVectorMasking)) {
                m.load(from: s.config)
            }
            if s.config.command != oldCommand {
                Self.driveINTx(&s)
            }
        }
        configDidWrite(offset: offset, count: data.count)
    }

    public var barRegions: [PCIBarRegion] {
        state.withLock { $0.config.barRegions }
    }

    public final func readBar(_ index: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        if let t = msix {
            let c = t.configuration
            if index == c.tableBar, let rel = relative(offset, UInt64(c.tableOffset), c.tableSize) {
                t.readTable(offset: rel, data: data)
                return
            }
            if index == c.pbaBar, let rel = relative(offset, UInt64(c.pbaOffset), c.pbaSize) {
                t.readPBA(offset: rel, data: data)
                return
            }
        }
        readBarContents(index, offset: offset, data: data)
    }

    public final func writeBar(_ index: Int, offset: UInt64, data: UnsafeRawBufferPointer) {
        if let t = msix {
            let c = t.configuration
            if index == c.tableBar, let rel = relative(offset, UInt64(c.tableOffset), c.tableSize) {
                t.writeTable(offset: rel, data: data)
                return
            }
            if index == c.pbaBar, let rel = relative(offset, UInt64(c.pbaOffset), c.pbaSize) {
                t.writePBA(offset: rel, data: data)
                return
            }
        }
        writeBarContents(index, offset: offset, data: data)
    }

    public final func attached(_ context: PCIAttachContext) {
        state.withLock { s in
            s.address = context.address
            s.intx = context.intx
            s.intxDriven = false
            Self.driveINTx(&s)
        }
        msix?.attach(router: context.msiRouter, device: context.address)
        msi?.attach(router: context.msiRouter, device: context.address)
        didAttach(context)
    }

    // MARK: Internals

    private static func driveINTx(_ s: inout State) {
        let level = s.intxAsserted && s.config.command & PCICommand.intxDisable == 0
        if level != s.intxDriven {
            s.intxDriven = level
            s.intx?.setLevel(level)
        }
    }
}

/// `offset - start` when `offset` lies in `[start, start+length)`.
func relative(_ offset: UInt64, _ start: UInt64, _ length: UInt64) -> UInt64? {
    guard offset >= start, offset - start < length else { return nil }
    return offset - start
}
