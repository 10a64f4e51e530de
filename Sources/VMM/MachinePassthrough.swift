import Bits
import Dispatch
import FoundationEssentials
import GuestMemory
import HostSys
import KVM
import Logging
import PCI
import Synchronization
import VFIO
import VFIOUser
import VMConfig

/// KVM's kvm-vfio device is the one the VFIO layer registers device files
/// with: `addVFIOFile` / `deleteVFIOFile` already have the protocol's shape.
extension KVMDevice: KVMVFIODevice {}

/// What an assigned device's glue needs of the VM: irqfds for its interrupts,
/// memory slots for its BARs. `VirtualMachine` in the VMM, a recorder in tests.
typealias PassthroughVM = VMInterruptRouting & VMMemorySlots

/// KVM memory slot numbers for BAR mappings, above the guest RAM slots.
final class MemorySlotPool: Sendable {
    /// The next never-used slot, and slots given back.
    private let slots: Mutex<(next: UInt32, free: [UInt32])>
    /// KVM_USER_MEM_SLOTS on x86 is 32764 (KVM_CAP_NR_MEMSLOTS says exactly).
    static let limit: UInt32 = 32764

    init(first: UInt32) { slots = Mutex((first, [])) }

    func take() throws -> UInt32 {
        try slots.withLock { s in
            if let free = s.free.popLast() { return free }
            guard s.next < Self.limit else { throw MachineError.setup("out of KVM memory slots for BAR mappings") }
            s.next += 1
            return s.next - 1
        }
    }

    func give(_ slot: UInt32) {
        slots.withLock { $0.free.append(slot) }
    }
}

/// One host device assigned to the guest: the VFIO side (`AssignedVFIODevice`)
/// behind the PCI model (`AssignedPCIFunction`), which sees it only through
/// `AssignedDeviceBackend`. Its BARs' mmap-able pages are KVM memory slots
/// that follow the BAR wherever the guest puts it; the MSI-X table and PBA
/// pages stay trapped and emulated. Interrupts never pass through the VMM:
/// VFIO signals eventfds that are KVM irqfds (MSI/MSI-X through GSI routes,
/// INTx as a resampled level irqfd).
final class PassthroughDevice: AssignedDeviceBackend {
    /// The device behind the model: a VFIO cdev or a vfio-user server.
    let device: any AssignedDeviceFile
    /// The VFIO cdev, when the kernel serves the device.
    var vfio: AssignedVFIODevice? { device as? AssignedVFIODevice }
    /// BAR placement keys from the config entry.
    let barAddresses: [Int: UInt64]
    /// The config entry, in words, for errors.
    let entryDescription: String
    /// "passthrough" or "vfio-user", for log lines.
    let kind: String
    /// Behind the vIOMMU when there is one (`iommu = true`, VFIO devices only).
    let behindVIOMMU: Bool
    let name: String
    private let vm: any PassthroughVM
    private let router: KVMMSIRouter
    private let slots: MemorySlotPool
    private let logger: Logger

    private struct State {
        var address: PCIAddress?
        var mode: AssignedInterruptMode = .none
        var intx: (trigger: EventFD, resample: EventFD, gsi: UInt32)?
        /// BAR index -> the parts mapped straight into the guest (offset
        /// range, host address of the mapping).
        var direct: [Int: [(range: Range<UInt64>, host: UInt64)]] = [:]
        /// BAR index -> the memory slots installed for it now.
        var installed: [Int: [UInt32]] = [:]
    }
    /// Held across each interrupt-mode switch and BAR move, so those of one
    /// device never interleave.
    private let state = Mutex(State())
    /// The host took the device back (`release`): it is closed, and every
    /// config or BAR access reads all ones, as from a device pulled out.
    private let released = Atomic<Bool>(false)
    var isReleased: Bool { released.load(ordering: .acquiring) }

    init(device: any AssignedDeviceFile, name: String, kind: String, barAddresses: [Int: UInt64], entryDescription: String,
         behindVIOMMU: Bool, vm: any PassthroughVM, router: KVMMSIRouter, slots: MemorySlotPool, logger: Logger) {
        self.device = device
        self.behindVIOMMU = behindVIOMMU
        self.barAddresses = barAddresses
        self.entryDescription = entryDescription
        self.kind = kind
        self.name = name
        self.vm = vm
        self.router = router
        self.slots = slots
        self.logger = logger
    }

    // MARK: AssignedDeviceBackend

    func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        guard !isReleased else { return AssignedVFIODevice.fillAllOnes(data) }
        _ = device.readConfig(offset: offset, into: data)
    }

    func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {
        guard !isReleased else { return }
        _ = device.writeConfig(offset: offset, from: data)
    }

    func readBar(_ index: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        guard !isReleased else { return AssignedVFIODevice.fillAllOnes(data) }
        _ = device.readRegion(UInt32(index), offset: offset, into: data)
    }

    func writeBar(_ index: Int, offset: UInt64, data: UnsafeRawBufferPointer) {
        guard !isReleased else { return }
        _ = device.writeRegion(UInt32(index), offset: offset, from: data)
    }

    func setInterruptMode(_ new: AssignedInterruptMode) {
        state.withLock { s in
            guard new != s.mode, !isReleased else { return }
            do {
                try leaveMode(&s)
                switch new {
                case .none:
                    break
                case let .intx(gsi):
                    let trigger = try EventFD(), resample = try EventFD()
                    try vm.registerIRQFD(trigger, gsi: gsi, resample: resample)
                    s.intx = (trigger, resample, gsi)
                    try device.enableINTx(trigger: trigger.fd.raw, resample: resample.fd.raw)
                case let .msi(n):
                    guard let a = s.address else { throw MachineError.setup("MSI enabled before the device was attached") }
                    try device.enableMSI(eventfds: try router.eventFDs(device: a, count: n))
                case let .msix(n):
                    guard let a = s.address else { throw MachineError.setup("MSI-X enabled before the device was attached") }
                    try device.enableMSIX(eventfds: try router.eventFDs(device: a, count: n))
                }
                s.mode = new
                logger.debug("\(kind) \(name): interrupts now \(new)")
            } catch {
                s.mode = .none
                logger.error("\(kind) \(name): cannot switch interrupts to \(new): \(error)")
            }
        }
    }

    /// Undoes the current interrupt mode (`s` is the locked state).
    private func leaveMode(_ s: inout State) throws {
        try device.disable(s.mode)
        if case .intx = s.mode, let i = s.intx { try vm.unregisterIRQFD(i.trigger, gsi: i.gsi) }
        s.intx = nil
        s.mode = .none
    }

    // MARK: Setup

    /// Builds the PCI model and maps the BARs' directly mappable parts.
    func makeModel() throws -> AssignedPCIFunction {
        let sizes = device.barSizes
        let m = try AssignedPCIFunction(backend: self, barSizes: sizes, romSize: device.romSize, name: name)
        // Only memory BARs can be memory slots: an I/O BAR (which vfio-pci
        // never offers to mmap, but a vfio-user server may) always traps.
        let memoryBars = Set(m.bars.filter { $0.kind != .io }.map(\.index))
        for (i, size) in sizes.sorted(by: { $0.key < $1.key }) where memoryBars.contains(i) {
            let trapped = m.msixTableRanges.filter { $0.bar == i }.map(\.range)
            let ranges = AssignedPCIFunction.directMapRanges(barSize: size, mappable: device.mappableAreas(UInt32(i)), trapped: trapped)
            var maps: [(range: Range<UInt64>, host: UInt64)] = []
            for r in ranges {
                let p = try device.mapRegion(UInt32(i), offset: r.lowerBound, length: UInt64(r.count))
                maps.append((r, UInt64(UInt(bitPattern: p))))
            }
            if !maps.isEmpty { state.withLock { $0.direct[i] = maps } }
        }
        return m
    }

    func attached(at a: PCIAddress) {
        state.withLock { $0.address = a }
    }

    /// Where the device sits on the guest's PCI bus, once attached.
    var address: PCIAddress? { state.withLock { $0.address } }

    /// What the log says about the BAR mappings.
    var mappingSummary: String {
        let direct = state.withLock { $0.direct }
        guard !direct.isEmpty else { return "no BAR is mmap-able: every access traps" }
        return direct.sorted { $0.key < $1.key }.map { bar, maps in
            "BAR \(bar): " + maps.map { "\(hex($0.range.lowerBound))+\(formatBytes(UInt64($0.range.count)))" }.joined(separator: ", ")
        }.joined(separator: "; ") + " mapped into the guest"
    }

    /// The root bus moved BAR `bar` (nil: not decoding): move its memory slots.
    func barMoved(_ bar: Int, to newAddress: UInt64?) {
        state.withLock { st in
            guard let maps = st.direct[bar], !isReleased else { return }
            for s in st.installed[bar] ?? [] {
                do { try vm.deleteUserMemoryRegion(slot: s) } catch {
                    logger.error("\(kind) \(name) BAR \(bar): cannot remove memory slot \(s): \(error)")
                }
                slots.give(s)
            }
            st.installed[bar] = nil
            guard let base = newAddress else { return }
            var now: [UInt32] = []
            for m in maps {
                do {
                    let s = try slots.take()
                    try vm.setUserMemoryRegion(slot: s, guestAddress: base + m.range.lowerBound, size: UInt64(m.range.count),
                                               hostAddress: m.host)
                    now.append(s)
                } catch {
                    logger.error("\(kind) \(name) BAR \(bar) at \(hex(base + m.range.lowerBound)): \(error); accesses will trap instead")
                }
            }
            st.installed[bar] = now
        }
    }

    /// The host wants the device back (vfio-pci's request notification: the
    /// device is being removed or unbound on the host, and that waits until
    /// the device is closed). From then on the guest reads all ones from it:
    /// interrupts off, its BARs out of the guest's memory map (accesses trap
    /// and read all ones), out of kvm-vfio, closed (its mappings undone, out
    /// of the IOAS). The guest's driver sees a device that was pulled out.
    func release(kvmVFIO: KVMDevice?) -> String {
        var reset = ""
        state.withLock { st in
            released.store(true, ordering: .releasing)
            try? leaveMode(&st)
            // No more DMA from us: Bus Master off, then whatever reset the
            // device has. While the host removes the device it holds the
            // device's lock, so the reset usually cannot happen then, and
            // vfio-pci restores the config it saved at open (Bus Master
            // included) once the device is closed: a device without a reset
            // the guest left running may then DMA once more, into an IOAS it
            // has left, and the host IOMMU blocks that (a DMAR fault in the
            // host's log, as the lab's e1000e showed).
            var command = [UInt8](repeating: 0, count: 2)
            command.withUnsafeMutableBytes { _ = device.readConfig(offset: PCIReg.command, into: $0) }
            command[0] &= ~UInt8(PCICommand.master)
            command.withUnsafeBytes { _ = device.writeConfig(offset: PCIReg.command, from: $0) }
            do { reset = try device.resetForExit() } catch { reset = "not reset (\(error))" }
            for (_, installed) in st.installed {
                for slot in installed {
                    try? vm.deleteUserMemoryRegion(slot: slot)
                    slots.give(slot)
                }
            }
            st.installed = [:]
            st.direct = [:]
        }
        var what = "interrupts and Bus Master off, \(reset), BARs out of the guest's memory map"
        if let kvmVFIO, let vfio {
            do { try vfio.cdev.unregister(from: kvmVFIO) } catch { what += " (kvm-vfio: \(error))" }
        }
        device.close()
        return what + ", closed"
    }

    /// Interrupts off, device reset, fds closed. Idempotent.
    func shutdown() -> String {
        state.withLock { try? leaveMode(&$0) }
        var what = "released"
        do { what = try device.resetForExit() + " and released" } catch {
            what = "released (reset failed: \(error))"
        }
        device.close()
        return what
    }
}

/// Every assigned device of the VM plus the iommufd context they share.
/// Built in the kernel's order (see README.md, "Assigning a host device"):
/// /dev/iommu and an IOAS; each device opened, registered with KVM's
/// kvm-vfio device (KVM_DEV_VFIO_FILE_ADD, before binding), bound to the
/// iommufd and attached to the IOAS; the IOVA ranges the IOMMU allows
/// checked against guest RAM; guest RAM mapped into the IOAS at IOVA ==
/// guest physical address (each device reset first, the best way it has);
/// the WBINVD verdicts logged.
final class MachinePassthrough: Sendable {
    let context: IOMMUContext?
    let kvmVFIO: KVMDevice?
    private struct State {
        /// Emptied by `shutdown`.
        var devices: [PassthroughDevice]
        var byAddress: [PCIAddress: PassthroughDevice] = [:]
        /// The thread that hears vfio-pci's requests to give a device back
        /// (its sources keep their eventfds).
        var requestLoop: DeviceIOLoop?
    }
    private let state: Mutex<State>
    private let logger: Logger

    /// The devices not yet shut down.
    var devices: [PassthroughDevice] { state.withLock { $0.devices } }

    static func none(logger: Logger) -> MachinePassthrough {
        MachinePassthrough(context: nil, kvmVFIO: nil, devices: [], logger: logger)
    }

    private init(context: IOMMUContext?, kvmVFIO: KVMDevice?, devices: [PassthroughDevice], logger: Logger) {
        self.context = context
        self.kvmVFIO = kvmVFIO
        state = Mutex(State(devices: devices))
        self.logger = logger
    }

    /// Threads that fault guest RAM in before it is pinned, at most.
    static let populateThreads = 8

    static func setUp(config: VMConfig, vm: VirtualMachine, ram: GuestRAM, router: KVMMSIRouter,
                      slots: MemorySlotPool, iommufdPath: String = "/dev/iommu",
                      logger: Logger) throws -> MachinePassthrough {
        guard !config.passthrough.isEmpty else {
            let users = try MachineVFIOUser.open(config: config, vm: vm, ram: ram, router: router, slots: slots, logger: logger)
            return MachinePassthrough(context: nil, kvmVFIO: nil, devices: users, logger: logger)
        }
        do {
            let discovery = SysfsDiscovery()
            let ctx = try IOMMUContext.open(path: iommufdPath)
            let kvmVFIO = try vm.createDevice(.vfio)
            var devices: [PassthroughDevice] = []
            var vfios: [AssignedVFIODevice] = []
            for (i, entry) in config.passthrough.enumerated() {
                let spec: AssignedDeviceSpec
                switch entry.device {
                case let .pciAddress(b): spec = .pciAddress(b)
                case let .cdev(p): spec = .cdev(p)
                }
                let dev: AssignedVFIODevice
                do { dev = try AssignedVFIODevice.open(spec, discovery: discovery) } catch {
                    throw MachineError.passthrough("passthrough[\(i)].device \(entry.description): \(error)")
                }
                try dev.cdev.register(with: kvmVFIO)
                try dev.bindAndAttach(ctx)
                logger.info("passthrough \(dev.bdf): cdev \(dev.cdevPath), iommufd device \(dev.deviceID.map(String.init) ?? "?"), IOAS \(ctx.ioas.id), page table \(dev.pageTableID.map(String.init) ?? "?")")
                devices.append(PassthroughDevice(device: dev, name: dev.bdf, kind: "passthrough", barAddresses: entry.barAddresses,
                                                 entryDescription: "passthrough[\(i)].device \(entry.description)",
                                                 behindVIOMMU: entry.iommu, vm: vm, router: router, slots: slots, logger: logger))
                vfios.append(dev)
            }
            // Reset before guest RAM is in the IOAS: DMA the last user left
            // running faults instead of landing in this guest's memory.
            for (d, vfio) in zip(devices, vfios) {
                let kind = try vfio.reset()
                logger.info("passthrough \(d.name): \(kind.text)")
                if case let .withoutFLR(why) = kind {
                    logger.warning("passthrough \(d.name): it has no function-level reset and \(why); many devices ignore a power-management reset, so DMA the last user set up (a NIC's receive ring) can survive into this guest until its driver resets the device. Put it behind its own PCIe root port or switch port (then it gets a bus reset), or prefer a device with FLR")
                }
            }
            let ranges = ram.slots.map { (guest: $0.guestBase, host: $0.hostAddress, size: $0.size) }
            try ctx.checkGuestRAM(ranges.map { (guest: $0.guest, size: $0.size) })
            // All of guest RAM is about to be pinned: fault it in first on
            // every CPU, not page by page on this thread inside the map.
            let threads = min(max(ProcessInfo.processInfo.activeProcessorCount, 1), Self.populateThreads)
            let populateStart = ProcessStats.monotonicNanos
            var populated = ""
            do {
                try ram.populate(threads: threads)
                let ms = Double(ProcessStats.monotonicNanos &- populateStart) / 1e6
                populated = "; faulted in first by \(threads) thread\(threads == 1 ? "" : "s") in \(decimal(ms, digits: 1)) ms"
            } catch {
                logger.warning("passthrough: guest RAM could not be faulted in ahead (\(error)); the IOAS map faults it in instead")
            }
            let (bytes, seconds) = try ctx.mapGuestRAM(ranges)
            let total = Double(ProcessStats.monotonicNanos &- populateStart) / 1e6
            logger.info("IOAS \(ctx.ioas.id): mapped \(formatBytes(bytes)) of guest RAM in \(ranges.count) range\(ranges.count == 1 ? "" : "s") in \(decimal(seconds * 1000, digits: 1)) ms (\(config.hugePages ? "2 MiB" : "4 KiB") pages\(populated); \(decimal(total, digits: 1)) ms in all)")
            var verdicts: [CoherencyVerdict] = []
            for (d, vfio) in zip(devices, vfios) {
                let v = try vfio.coherency(noSnoopEnabled: nil)
                verdicts.append(v)
                logger.info("coherency \(d.name): \(v.text)")
            }
            logger.info("coherency VM: \(CoherencyVerdict.decideVM(verdicts).text)")
            for d in devices {
                logger.info("passthrough \(d.name): peer-to-peer DMA is off: its BARs are mapped into the guest but not into the IOAS (that needs Linux 6.19's dma-buf path), so other devices cannot DMA to them")
            }
            let users = try MachineVFIOUser.open(config: config, vm: vm, ram: ram, router: router, slots: slots, logger: logger)
            return MachinePassthrough(context: ctx, kvmVFIO: kvmVFIO, devices: devices + users, logger: logger)
        } catch let e as MachineError {
            throw e
        } catch {
            throw MachineError.passthrough("passthrough: \(error)")
        }
    }

    /// Attaches each device's PCI model to the bus, BARs placed as configured.
    func attach(to bus: PCIRootBus) throws {
        for d in devices {
            do {
                let m = try d.makeModel()
                let a = try bus.attach(m, placement: d.barAddresses)
                d.attached(at: a)
                state.withLock { $0.byAddress[a] = d }
                for r in bus.decodedBars(slot: Int(a.device)) { d.barMoved(r.index, to: r.address) }
                logger.info("pci \(a): \(d.kind) \(d.name) [\(d.device.pciID)]; \(d.mappingSummary)")
            } catch {
                throw MachineError.passthrough("\(d.entryDescription): \(error)")
            }
        }
    }

    /// Starts hearing the host's requests to give a device back (its removal
    /// or unbind on the host), each answered by releasing the device
    /// (`PassthroughDevice.release`), on a thread of its own, `io-passthrough`.
    /// Called once the sandbox is on, as the other I/O threads are.
    func startRequestWatch() throws {
        let devices = self.devices
        guard !devices.isEmpty else { return }
        let loop = try DeviceIOLoop(name: "io-passthrough") { _ in }
        for d in devices {
            guard let vfio = d.vfio else { continue }
            let event = try EventFD(nonBlocking: true)
            guard try vfio.notifyOnRequest(eventfd: event.fd.raw) else {
                logger.info("passthrough \(d.name): VFIO offers no request notification: a removal on the host waits until the VM stops")
                continue
            }
            let kvmVFIO = self.kvmVFIO, logger = self.logger
            try loop.addReadable(event.fd) {
                event.drain()
                let what = d.release(kvmVFIO: kvmVFIO)
                logger.error("passthrough \(d.name): the host asked for the device back (removed or unbound on the host): \(what); the VM runs on and its guest reads all ones from the device, as from one pulled out")
                return false
            }
        }
        state.withLock { $0.requestLoop = loop }
        loop.start()
    }

    func barMoved(device: PCIAddress, bar: Int, to new: UInt64?) {
        state.withLock { $0.byAddress[device] }?.barMoved(bar, to: new)
    }

    /// At exit: interrupts off, devices reset and closed, guest RAM unpinned.
    func shutdown() {
        if let loop = state.withLock({ $0.requestLoop }) {
            loop.stop()
            _ = loop.join(until: .now() + 5)
        }
        for d in devices {
            if d.isReleased {
                logger.info("passthrough \(d.name): released earlier, when the host asked for it")
                continue
            }
            // Out of kvm-vfio while the fd is still open (KVM_DEV_VFIO_FILE_DEL names the
            // file by its fd), then reset and closed.
            if let kvmVFIO, let vfio = d.vfio {
                do { try vfio.cdev.unregister(from: kvmVFIO) } catch {
                    logger.warning("passthrough \(d.name): removing it from KVM's kvm-vfio device: \(error)")
                }
            }
            if let user = d.device as? VFIOUserDevice {
                let c = user.client.counters
                logger.info("vfio-user \(d.name): \(c.requests) requests; the server's DMA messages: \(c.dmaReads) reads, \(c.dmaWrites) writes, \(formatBytes(c.dmaBytes)), \(c.dmaRefused) refused")
            }
            let what = d.shutdown()
            logger.info("\(d.kind) \(d.name): \(what)")
        }
        do { try context?.unmapAll() } catch { logger.warning("IOAS unmap at exit: \(error)") }
        state.withLock { $0.devices = [] }
    }
}

func formatBytes(_ n: UInt64) -> String {
    if n >= 1 << 30, n % (1 << 30) == 0 { return "\(n >> 30) GiB" }
    if n >= 1 << 20, n % (1 << 20) == 0 { return "\(n >> 20) MiB" }
    if n >= 1 << 10, n % (1 << 10) == 0 { return "\(n >> 10) KiB" }
    return "\(n) bytes"
}
