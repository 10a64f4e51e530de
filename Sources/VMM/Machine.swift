import ACPI
import Bits
import Boot
import Devices
import FoundationEssentials
import GuestMemory
import HostSys
import KVM
import Logging
import PCI
import Virtio
import VMConfig

/// Errors found while building a machine, before any guest code runs.
public enum MachineError: Error, CustomStringConvertible {
    case hostUnsupported(String)
    case kernel(String)
    case setup(String)
    /// An assigned device cannot be used as configured (not bound to
    /// vfio-pci, group not viable, busy, no iommufd, IOVA conflict, BAR
    /// placement): the host must change, exit status 69.
    case passthrough(String)

    public var description: String {
        switch self {
        case let .hostUnsupported(s): return s
        case let .kernel(s): return s
        case let .setup(s): return s
        case let .passthrough(s): return s
        }
    }
}

/// The x86 machine: KVM VM, guest RAM, in-kernel irqchip and PIT, legacy
/// devices on the port-I/O bus, vCPUs set up for the kernel's entry.
/// Built whole by `init`, then only read: the vCPU threads share it.
final class Machine: Sendable {
    /// Addresses KVM needs for Intel's real-mode TSS (3 pages) and EPT identity
    /// map (1 page), inside the MMIO hole below the IOAPIC (as QEMU and
    /// Firecracker place them: linux/Documentation/virt/kvm/api.rst).
    static let identityMapAddress: UInt64 = 0xFFFB_C000
    static let tssAddress: UInt64 = 0xFFFB_D000
    /// Where the lab's workaround maps guest RAM a second time: bit 32.
    static let ramAliasBase: UInt64 = 1 << 32
    /// The GSI of the ACPI Generic Event Device that reports the power
    /// button: ISA IRQ 9, which a HW-reduced machine leaves free (no SCI).
    static let powerButtonGSI: UInt32 = 9

    let config: VMConfig
    let logger: Logger
    let kvm: KVMSystem
    let vm: VirtualMachine
    let ram: GuestRAM
    let pio = Bus()
    let mmio = Bus()
    let serial: Serial16550
    let pci: MachinePCI
    let passthrough: MachinePassthrough
    /// The vIOMMU, when the config asks for one and a device is behind it.
    let viommu: MachineVIOMMU?
    /// The virtio console (hvc0), when the config has one.
    let virtioConsole: VirtioConsole?
    let vcpus: [VCPU]
    let boot: BootResult
    let latch: StopLatch
    let clock: RunClock

    init(config: VMConfig, console: ConsoleOutput, latch: StopLatch, panic: PanicTracker, clock: RunClock,
         options: RunOptions, logger: Logger) throws {
        self.config = config
        self.logger = logger
        self.latch = latch
        self.clock = clock

        // Read and parse the kernel and initramfs first: a bad file fails
        // before KVM is touched.
        let files = try BootFiles.read(config)
        let image = files.kernel
        let initrd = files.initramfs

        kvm = try KVMSystem(path: options.kvmPath)
        let backend = KVMSystem.hostBackend()
        if backend == .pvm && !options.allowPVM {
            throw MachineError.hostUnsupported("""
                this host's KVM is \(backend.rawValue): it creates VMs but cannot run a stock Linux guest \
                (it dies in the decompressor with an emulation failure). Run SwiftVMM on a host with \
                VT-x or AMD-V, or inside the project's lab: scripts/lab run -- swiftvmm run CONFIG \
                (--allow-pvm tries anyway)
                """)
        }
        let maxCPUs = kvm.maxVCPUs()
        guard config.vcpus <= maxCPUs else {
            throw MachineError.setup("machine.vcpus: \(config.vcpus) vCPUs requested, KVM on this host allows \(maxCPUs)")
        }

        vm = try kvm.createVM()
        try vm.setIdentityMapAddress(Self.identityMapAddress)
        try vm.setTSSAddress(Self.tssAddress)
        try vm.createIRQChip()
        try vm.createPIT()

        let map = GuestMemoryMap(ramBytes: config.memoryBytes)
        do { ram = try GuestRAM(map: map, hugePages: config.hugePages) } catch {
            throw MachineError.setup("cannot allocate \(config.memoryBytes >> 20) MiB of guest RAM: \(error)")
        }
        for (i, s) in ram.slots.enumerated() {
            try vm.setUserMemoryRegion(slot: UInt32(i), guestAddress: s.guestBase, size: s.size, hostAddress: s.hostAddress)
        }
        // The lab's workaround for the CR3 bit-32 bug (RunOptions.ramAliasAt4G).
        var aliasSlots: UInt32 = 0
        var mmio64Floor: UInt64?
        if options.ramAliasAt4G {
            if ram.slots.count == 1, let s = ram.slots.first, s.guestBase == 0 {
                try vm.setUserMemoryRegion(slot: UInt32(ram.slots.count), guestAddress: Self.ramAliasBase, size: s.size, hostAddress: s.hostAddress)
                aliasSlots = 1
                mmio64Floor = Self.ramAliasBase + s.size
                logger.warning("lab workaround (SWIFTVMM_LAB_CR3_ALIAS): guest RAM [0x0, 0x\(String(s.size, radix: 16))) also at 0x\(String(Self.ramAliasBase, radix: 16)), the 64-bit PCI window above it")
            } else {
                logger.warning("lab workaround (SWIFTVMM_LAB_CR3_ALIAS) not applied: guest RAM reaches above 4 GiB")
            }
        }
        let memorySlots = MemorySlotPool(first: UInt32(ram.slots.count) + aliasSlots)

        // Legacy devices (port I/O).
        let events = ClosureEventSink { [latch, clock, logger, panic] event in
            switch event {
            case .reset: if !panic.endOfPanic() { latch.stop(.reset) }
            case .powerOff: if !panic.endOfPanic() { latch.stop(.powerOff) }
            case let .guestVerdict(v): latch.stop(.guestVerdict(v))
            case .guestPanic: panic.report(viaPVPanic: true)
            case .bootComplete:
                if let t = clock.markBootComplete() {
                    logger.info("guest boot complete \(decimal(t * 1000, digits: 1)) ms after VMM start")
                }
            }
        }
        let irq4 = KVMIRQLine(vm: vm, irq: Serial16550.com1IRQ) { logger.error("\($0)") }
        serial = Serial16550(interrupt: irq4, console: console)
        try pio.insert(serial, base: Serial16550.com1Base, length: Serial16550.registerCount)
        try LegacyDevices.install(on: pio, events: events)

        // PCI: assigned devices first (IOAS, kvm-vfio, bind, attach, DMA
        // map), so a host problem fails before anything else is built; then
        // the root bus, the virtio devices in the documented order, and the
        // assigned devices' PCI models.
        do {
            let msiRouter = KVMMSIRouter(vm: vm, logger: logger)
            passthrough = try MachinePassthrough.setUp(config: config, vm: vm, ram: ram, router: msiRouter,
                                                       slots: memorySlots, iommufdPath: options.iommufdPath,
                                                       logger: logger)
            pci = try MachinePCI(vm: vm, memoryMap: map, mmio64Size: config.pciMMIO64Size, mmio64Floor: mmio64Floor,
                                 mmio: mmio, pio: pio, msiRouter: msiRouter, passthrough: passthrough, logger: logger)
            pci.bus.configIO.onReset = { if !panic.endOfPanic() { latch.stop(.reset) } } // port 0xCF9, reboot=pci
            var viommu: MachineVIOMMU?
            if let c = config.viommu {
                viommu = try MachineVIOMMU(config: c, ram: ram, passthrough: passthrough, logger: logger)
            }
            virtioConsole = try pci.attachConfiguredDevices(config: config, memory: ram,
                                                            consoleOutput: try Self.virtioConsoleOutput(config.virtioConsole),
                                                            viommu: viommu, logger: logger)
            try passthrough.attach(to: pci.bus)
            viommu?.addAssigned(passthrough)
            // Last on the bus, so no other device's address depends on it.
            if let v = viommu, try v.attach(to: pci, memory: ram, logger: logger) == nil { viommu = nil }
            self.viommu = viommu
        } catch let e as MachineError {
            throw e
        } catch {
            throw MachineError.setup("PCI devices: \(error)")
        }

        // ACPI: HW-reduced FADT with sleep registers (poweroff), MADT, DSDT with
        // COM1, RTC and the pvpanic device (QEMU0001). The i8042 is left out of
        // ACPI on purpose: with the FADT's 8042 flag clear Linux does not probe
        // for a keyboard (no keyboard answers here; the probe cost 1.7 s of
        // boot in the lab), while `reboot=k` still pulses the reset line
        // through port 0x64 (arch/x86/kernel/reboot.c, BOOT_KBD).
        let acpi: ACPILayout
        do {
            acpi = try ACPITables.build(config: ACPIMachine(vcpus: config.vcpus, i8042: nil,
                                                            pci: pci.acpiDescription(),
                                                            powerButtonGSI: Self.powerButtonGSI,
                                                            viommu: viommu?.acpiDescription()))
            try acpi.write(into: ram)
        } catch {
            throw MachineError.setup("cannot build ACPI tables: \(error)")
        }
        try LegacyDevices.installACPISleep(on: pio, events: events)

        // Kernel, initrd, boot structures.
        do {
            boot = try LinuxLoader.load(kernel: image, initrd: initrd, cmdline: config.cmdline,
                                        vcpus: config.vcpus, memoryMap: map, rsdpAddress: acpi.rsdpAddress, into: ram)
        } catch {
            throw MachineError.kernel("cannot load kernel \(config.kernelPath): \(error)")
        }

        let supported = try kvm.supportedCPUID()
        let tscDeadline = kvm.hasTSCDeadlineTimer
        var vcpus: [VCPU] = []
        for i in 0..<config.vcpus {
            let v = try vm.createVCPU(id: UInt32(i))
            try v.setCPUID(CPUIDPolicy.guestCPUID(supported: supported, apicID: UInt32(i), vcpuCount: UInt32(config.vcpus), tscDeadline: tscDeadline))
            try v.setMSRs(boot.cpu.msrs.map { (index: $0.index, value: $0.value) })
            try v.setupLocalInterrupts()
            if i == 0 {
                try BootStateAdapter.apply(boot.cpu, to: v)
            }
            vcpus.append(v)
        }
        self.vcpus = vcpus
        // Every device is on its bus now: from here on lookups take no lock.
        pio.freeze()
        mmio.freeze()
    }

    /// "Presses" the ACPI power button: an edge on the GED's interrupt; the
    /// guest's _EVT notifies \_SB.PWRB and its power-button handler decides.
    func pressPowerButton() throws {
        try vm.setIRQLine(Self.powerButtonGSI, level: true)
        try vm.setIRQLine(Self.powerButtonGSI, level: false)
    }

    /// Where the virtio console (hvc0) writes, or nil when there is none.
    static func virtioConsoleOutput(_ mode: SerialConfig) throws -> ConsoleOutput? {
        do { return try FDConsoleOutput.forMode(mode) } catch {
            throw MachineError.setup("console.path: \(error)")
        }
    }
}
