import ACPI
import Devices
import FoundationEssentials
import GuestMemory
import HostSys
import KVM
import Logging
import PCI
import Synchronization
import Virtio
import VMConfig

/// The PCI side of the machine: root bus with CF8/ECAM config access and BAR
/// windows, MSI-X through KVM (GSI routing + irqfd), INTx through the IOAPIC,
/// and the virtio devices the config asks for, in a stable order:
/// 00.0 host bridge, then virtio-blk per [[disk]], virtio-net per [[net]],
/// virtio-console, virtio-rng (slots 1, 2, ... in that order).
final class MachinePCI: Sendable {
    let bus: PCIRootBus
    let msiRouter: KVMMSIRouter
    /// Queue ioeventfds and the I/O thread of each virtio device: `io-blkN`
    /// per disk, `io-netN` per NIC (which also reads its TAP), `io-console`,
    /// `io-rng`.
    let notifier: VirtioNotifier
    /// The guest RAM every emulated device can reach by DMA (identity mapped).
    private let ramRanges: [(guest: UInt64, size: UInt64)]
    /// Each disk as attached, for the exit lines.
    private let disks = Mutex<[(name: String, device: VirtioBlock, file: BlockFile, ring: BlockFileRing?)]>([])

    /// The root bus on `mmio` and `pio`, delivering MSIs through `msiRouter`;
    /// BAR moves go to the virtio notifier and to `passthrough`'s devices.
    /// `mmio64Floor`: the 64-bit window starts at or above it (the lab's
    /// second copy of guest RAM, `RunOptions.ramAliasAt4G`, sits below).
    init(vm: any VMInterruptRouting, memoryMap: GuestMemoryMap, mmio64Size: UInt64, mmio64Floor: UInt64? = nil,
         mmio: Bus, pio: Bus, msiRouter: KVMMSIRouter, passthrough: MachinePassthrough, logger: Logger) throws {
        ramRanges = IdentityDMA.ranges(of: memoryMap)
        self.msiRouter = msiRouter
        let windows = PCIWindows.standard(memoryMap: memoryMap, mmio64Size: mmio64Size, mmio64Floor: mmio64Floor ?? 0)
        bus = PCIRootBus(windows: windows, msiRouter: msiRouter,
                         intxLine: { gsi in KVMIRQLine(vm: vm, irq: gsi) { logger.error("\($0)") } })
        try bus.install(mmioBus: mmio, pioBus: pio)
        let notifier = VirtioNotifier(vm: vm, logger: logger)
        self.notifier = notifier
        bus.onBarMoved = { address, bar, _, new in
            notifier.barMoved(device: address, bar: bar, to: new)
            passthrough.barMoved(device: address, bar: bar, to: new)
        }
    }

    /// The host bridge as ACPI describes it (PCI0 _CRS and _PRT, MCFG), from
    /// the same windows and INTx swizzle the root bus uses.
    func acpiDescription() -> ACPIMachine.PCIHostBridge {
        let w = bus.windows
        func closed32(_ win: PCIAddressWindow) -> ClosedRange<UInt32> {
            UInt32(truncatingIfNeeded: win.base)...UInt32(truncatingIfNeeded: win.base + win.size - 1)
        }
        let io = UInt16(truncatingIfNeeded: w.io.base)...UInt16(truncatingIfNeeded: w.io.base + w.io.size - 1)
        return ACPIMachine.PCIHostBridge(
            ecamBase: w.ecam.base, ioWindows: [io], mmio32Window: closed32(w.mmio32),
            mmio64Window: w.mmio64.base...(w.mmio64.base + w.mmio64.size - 1),
            intxRoutes: bus.prtEntries.map {
                .init(slot: UInt8(truncatingIfNeeded: $0.slot), pin: $0.acpiPin, gsi: $0.gsi)
            })
    }

    /// Wraps a virtio device model in the virtio-pci transport and attaches
    /// it, with its queue notifications on a new I/O thread named `thread`
    /// (returned, so the device can watch other descriptors there), and its
    /// PCI address. The device reaches `memory` through its own
    /// `DMATranslator`, which holds the identity mapping of guest RAM; behind
    /// a vIOMMU (`viommu`) the device offers VIRTIO_F_ACCESS_PLATFORM and the
    /// guest's domains decide what the translator holds.
    @discardableResult
    func attachVirtio(_ device: VirtioDevice, name: String, thread: String, memory: GuestMemoryAccess,
                      viommu: MachineVIOMMU?, kernelQueues: Range<Int> = 0..<0,
                      logger: Logger) throws -> (loop: DeviceIOLoop, address: PCIAddress, transport: VirtioPCIDevice) {
        // Behind a vIOMMU, `addEmulated` below sets what the translator
        // holds before the guest runs (identity when unattached endpoints
        // bypass, nothing otherwise).
        let dma = DMATranslator(memory: memory)
        if viommu == nil {
            try IdentityDMA.mapGuestRAM(ramRanges, into: dma)
            try dma.attach()
        }
        // The handler is made before the bus places the device.
        let placed = PlacedAddress()
        let transport = try VirtioPCIDevice(device: device, memory: DMAGuestMemory(translator: dma),
                                            accessPlatform: viommu != nil) { error in
            // The guest broke the virtio protocol: the device is now in
            // DEVICE_NEEDS_RESET; the VMM keeps running.
            logger.warning("guest error: \(name) at \(placed.address.map { "\($0)" } ?? "?"): \(error)")
        }
        let a = try bus.attach(transport)
        placed.address = a
        if let viommu {
            let iommu = viommu.device
            try viommu.endpoints.addEmulated(at: a, name: "\(a) (\(name))", translator: dma) { endpoint, fault in
                iommu.reportFault(endpoint: endpoint, fault)
            }
        }
        let bar0 = bus.decodedBars(slot: Int(a.device)).first { $0.index == VirtioPCIDevice.Layout.bar }?.address
        let loop = try notifier.register(transport, at: a, bar0: bar0, thread: thread, kernelQueues: kernelQueues)
        logger.info("pci \(a): \(name)\(viommu != nil ? ", behind the vIOMMU" : "")")
        return (loop, a, transport)
    }

    /// Attaches the virtio devices `config` asks for; returns the virtio
    /// console, if there is one.
    func attachConfiguredDevices(config: VMConfig, memory: GuestMemoryAccess, consoleOutput: ConsoleOutput?,
                                 viommu: MachineVIOMMU?, logger: Logger) throws -> VirtioConsole? {
        /// The vIOMMU for a device whose table says `iommu = true`.
        func behind(_ iommu: Bool) -> MachineVIOMMU? { iommu ? viommu : nil }
        for (i, d) in config.disks.enumerated() {
            let file: BlockFile
            do { file = try BlockFile(path: d.path, readOnly: d.readOnly, direct: d.cache == .none) } catch {
                throw MachineError.setup("disk[\(i)].path: \(error)")
            }
            if d.cache == .none {
                if let why = file.directUnavailable {
                    logger.warning("disk[\(i)] \(d.path): cache = \"none\" asked, but \(why): using the page cache (as cache = \"writeback\")")
                } else {
                    logger.info("disk[\(i)] \(d.path): cache = \"none\": O_DIRECT for aligned transfers, past the host page cache")
                }
            }
            let queues = d.queueCount(vcpus: config.vcpus)
            let ring = Self.diskRing(d, index: i, file: file, queues: queues, viommu: behind(d.iommu) != nil, logger: logger)
            let blk = VirtioBlock(backend: file, serial: "swiftvmm-disk\(i)", queues: queues, async: ring)
            disks.withLock { $0.append(("disk[\(i)] \(d.path)", blk, file, ring)) }
            let loop = try attachVirtio(blk, name: "virtio-blk \(d.path)\(d.readOnly ? " (read-only)" : "") \(file.capacity >> 20) MiB, "
                                            + "\(queues) queue\(queues == 1 ? "" : "s"), \(ring == nil ? "synchronous I/O" : "io_uring")",
                                        thread: "io-blk\(i)", memory: memory, viommu: behind(d.iommu), logger: logger).loop
            if let ring {
                // Completions are answered on the disk's own I/O thread.
                try loop.addReadable(ring.completionEvent.fd) {
                    blk.completionsReady()
                    return true
                }
            }
        }
        for (i, n) in config.nets.enumerated() {
            guard let mac = MACAddress(n.mac) else { throw MachineError.setup("net[\(i)].mac: \(n.macString) is not a unicast address") }
            if let vhost = Self.netVhost(n, index: i, memory: memory, viommu: behind(n.iommu) != nil, logger: logger) {
                try attachVhostNet(n, index: i, mac: mac, vhost: vhost, pairs: n.queuePairs(vcpus: config.vcpus),
                                   memory: memory, logger: logger)
                continue
            }
            let tap: TapDevice
            do { tap = PassedDescriptor.isPassed(n.tap) ? try TapDevice(passed: n.tap) : try TapDevice(name: n.tap) } catch {
                throw MachineError.setup("net[\(i)].tap: \(error)")
            }
            let net = VirtioNet(backend: tap, mac: mac)
            let loop = try attachVirtio(net, name: "virtio-net tap \(tap.name) mac \(n.macString)", thread: "io-net\(i)",
                                        memory: memory, viommu: behind(n.iommu), logger: logger).loop
            // Frames from the host go to the guest's receive queue, read on
            // the device's I/O thread when the TAP is readable (one frame a
            // wake-up; the descriptor stays blocking for the transmit path).
            try loop.addReadable(tap.fd) {
                do {
                    let frame = try tap.readFrame()
                    if !frame.isEmpty { net.receive(frame: frame) }
                    return true
                } catch {
                    logger.error("net[\(i)] tap \(tap.name): \(error); the NIC receives nothing more (was the TAP deleted on the host?)")
                    return false
                }
            }
        }
        var console: VirtioConsole?
        if let out = consoleOutput {
            let c = VirtioConsole(output: out)
            try attachVirtio(c, name: "virtio-console (hvc0)", thread: "io-console", memory: memory,
                             viommu: behind(config.virtioConsoleIOMMU), logger: logger)
            console = c
        }
        if config.rng {
            try attachVirtio(VirtioRNG(), name: "virtio-rng", thread: "io-rng", memory: memory,
                             viommu: behind(config.rngIOMMU), logger: logger)
        }
        return console
    }

    /// NIC `index` on vhost-net: a TAP queue and a vhost-net instance per
    /// queue pair, the queues' ioeventfds as vhost's kicks, their MSI-X
    /// irqfds as its calls (see `VhostNetPath`); without MSI-X, the call
    /// eventfds are watched on the NIC's I/O thread, which raises INTx.
    private func attachVhostNet(_ n: NetConfig, index i: Int, mac: MACAddress,
                                vhost: (device: VhostNet, regions: [(guest: UInt64, size: UInt64, host: UInt64)]),
                                pairs: Int, memory: GuestMemoryAccess, logger: Logger) throws {
        let taps = try Self.netTaps(n, index: i, pairs: pairs, logger: logger)
        var vhosts = [vhost.device]
        do { while vhosts.count < taps.count { vhosts.append(try VhostNet()) } } catch {
            throw MachineError.setup("net[\(i)]: vhost-net for queue pair \(vhosts.count): \(error)")
        }
        let path = try VhostNetPath(vhosts: vhosts, taps: taps, memory: vhost.regions, name: "net[\(i)]", logger: logger)
        let net = VirtioNetKernel(dataPath: path, mac: mac, queuePairs: taps.count)
        let described = taps.count == 1 ? "1 queue pair" : "\(taps.count) queue pairs"
        let (loop, a, transport) = try attachVirtio(net, name: "virtio-net tap \(taps[0].name) mac \(n.macString), vhost-net, \(described)",
                                                    thread: "io-net\(i)", memory: memory, viommu: nil,
                                                    kernelQueues: 0..<path.ringCount, logger: logger)
        let msi = msiRouter
        path.useIRQFDs { [weak transport] q in
            guard let v = transport?.msixVector(forQueue: q) else { return nil }
            return try? msi.eventFD(device: a, vector: v)
        }
        path.useKicks(try (0..<path.ringCount).map { q in
            guard let e = notifier.event(device: a, queue: q) else {
                throw MachineError.setup("net[\(i)]: no eventfd for queue \(q)")
            }
            return e
        })
        for (q, call) in path.callEvents.enumerated() {
            try loop.addReadable(call.fd) {
                call.drain()
                net.usedBuffers(queue: q)
                return true
            }
        }
        // vhost-net reads and writes the TAP queues, and nothing wakes the
        // VMM when one fails (the TAP deleted on the host wakes its readers
        // for input, which is vhost's): every 2 s the NIC's I/O thread asks
        // the queues whether they report an error, says so once, and the VM
        // goes on without the NIC.
        let check = try TimerFD(everySeconds: 2)
        try loop.addReadable(check.fd) {
            check.drain()
            let failed = taps.indices.filter { taps[$0].fd.hasFailed }
            guard !failed.isEmpty else { return true }
            logger.error("net[\(i)] tap \(taps[0].name): the TAP failed under queue pair\(failed.count == 1 ? "" : "s") \(failed.map(String.init).joined(separator: ", ")) (was the TAP deleted on the host?); vhost-net moves no more frames there")
            return false
        }
    }

    /// vhost-net for NIC `index`, with guest RAM's regions for its memory
    /// table, or nil for the userspace data path: asked for (`vhost =
    /// false`), behind the vIOMMU (vhost would need the IOTLB protocol; the
    /// userspace path translates every buffer), or /dev/vhost-net missing or
    /// refused. Each case is logged.
    static func netVhost(_ n: NetConfig, index i: Int, memory: GuestMemoryAccess, viommu: Bool,
                         logger: Logger) -> (device: VhostNet, regions: [(guest: UInt64, size: UInt64, host: UInt64)])? {
        let what = "net[\(i)] tap \(n.tap)"
        guard n.vhost else {
            logger.info("\(what): userspace data path (vhost = false)")
            return nil
        }
        guard !PassedDescriptor.isPassed(n.tap) else {
            logger.info("\(what): userspace data path (a passed TAP queue, attached by its launcher)")
            return nil
        }
        guard !viommu else {
            logger.info("\(what): userspace data path behind the vIOMMU (vhost-net's IOTLB is not used)")
            return nil
        }
        guard let ram = memory as? GuestRAM else {
            logger.info("\(what): userspace data path (guest memory is not plain RAM)")
            return nil
        }
        do {
            let device = try VhostNet()
            logger.info("\(what): vhost-net kernel data path")
            return (device, ram.slots.map { ($0.guestBase, $0.size, $0.hostAddress) })
        } catch {
            logger.info("\(what): userspace data path (vhost-net unavailable: \(error))")
            return nil
        }
    }

    /// The TAP queues for NIC `index` on vhost-net, with a vnet header: one
    /// per queue pair (IFF_MULTI_QUEUE) when `pairs` > 1 and the TAP allows
    /// it; an existing TAP created without multi_queue gets one pair, logged.
    static func netTaps(_ n: NetConfig, index i: Int, pairs: Int, logger: Logger) throws -> [TapDevice] {
        let first: TapDevice
        do { first = try TapDevice(name: n.tap, vnetHeader: true, multiQueue: pairs > 1) } catch {
            throw MachineError.setup("net[\(i)].tap: \(error)")
        }
        if pairs > 1, !first.isMultiQueue {
            logger.warning("net[\(i)] tap \(n.tap) was created without multi_queue: 1 queue pair instead of \(pairs) (ip tuntap add \(n.tap) mode tap multi_queue)")
            return [first]
        }
        var taps = [first]
        while taps.count < pairs {
            do { taps.append(try TapDevice(name: first.name, vnetHeader: true, multiQueue: true)) } catch {
                throw MachineError.setup("net[\(i)].tap: queue \(taps.count): \(error)")
            }
        }
        return taps
    }

    /// Requests in flight per queue with io_uring (the submission ring holds
    /// this many per queue, 1024 at most over all of them).
    static let ringEntriesPerQueue = 256
    static let maxRingEntries = 1024

    /// The io_uring for disk `index`, or nil for synchronous I/O: asked
    /// for (`aio = "sync"`), behind the vIOMMU (the guest may unmap a buffer
    /// while a request on it is in flight, which only synchronous I/O,
    /// done under the translation's lock, rules out), or refused by the
    /// host kernel. Each case is logged.
    static func diskRing(_ d: DiskConfig, index i: Int, file: BlockFile, queues: Int, viommu: Bool,
                         logger: Logger) -> BlockFileRing? {
        guard d.aio == .ioUring else {
            logger.info("disk[\(i)] \(d.path): aio = \"sync\": one request at a time on its I/O thread")
            return nil
        }
        guard !viommu else {
            logger.info("disk[\(i)] \(d.path): synchronous I/O behind the vIOMMU (a buffer may be unmapped while in flight)")
            return nil
        }
        let entries = UInt32(min(queues * ringEntriesPerQueue, maxRingEntries))
        do {
            return try BlockFileRing(file: file, entries: entries)
        } catch {
            logger.warning("disk[\(i)] \(d.path): io_uring unavailable (\(error)): synchronous I/O instead")
            return nil
        }
    }

    /// One exit line per disk: what the guest asked of it, and how the data
    /// went (past the page cache with `cache = "none"`, or through it).
    func diskSummaries() -> [String] {
        disks.withLock { $0 }.map { d in
            let s = d.device.statistics
            let (direct, buffered) = d.file.transferCounts
            let errors = s.invalidRequests + s.backendErrors + s.unsupportedRequests + s.dmaFailures
            return "\(d.name): \(s.reads) reads (\(formatBytes(s.bytesRead))), \(s.writes) writes (\(formatBytes(s.bytesWritten))), "
                + "\(s.flushes) flushes, \(s.discards) discards, \(s.writeZeroes) write-zeroes (\(formatBytes(s.bytesZeroed)) zeroed), "
                + "\(errors) failed; host transfers: \(direct) O_DIRECT, \(buffered) through the page cache; "
                + "requests per queue \(s.requestsPerQueue.map(String.init).joined(separator: "/")), "
                + (d.ring.map { "io_uring, at most \(s.peakInFlight) in flight, \($0.retriedSynchronously) finished synchronously" }
                    ?? "synchronous I/O")
        }
    }
}

/// A device's PCI address, known once the bus has placed it; for handlers
/// made before that.
final class PlacedAddress: Sendable {
    private let value = Mutex<PCIAddress?>(nil)
    var address: PCIAddress? {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}
