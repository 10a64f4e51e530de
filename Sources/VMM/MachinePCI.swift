import Devices
import Foundation
import GuestMemory
import HostSys
import KVM
import Logging
import PCI
import Virtio
import VMConfig

/// The PCI side of the machine: root bus with CF8/ECAM config access and BAR
/// windows, MSI-X through KVM (GSI routing + irqfd), INTx through the IOAPIC,
/// and the virtio devices the config asks for, in a stable order:
/// 00.0 host bridge, then virtio-blk per [[disk]], virtio-net per [[net]],
/// virtio-console, virtio-rng (slots 1, 2, ... in that order).
final class MachinePCI {
    let bus: PCIRootBus
    let msiRouter: KVMMSIRouter
    private(set) var attached: [(PCIAddress, String)] = []
    private(set) var virtioConsole: VirtioConsole?

    init(vm: VirtualMachine, memoryMap: GuestMemoryMap, mmio: Bus, pio: Bus, logger: Logger) throws {
        msiRouter = KVMMSIRouter(vm: vm, logger: logger)
        bus = PCIRootBus(windows: PCIWindows.standard(memoryMap: memoryMap), msiRouter: msiRouter,
                         intxLine: { gsi in KVMIRQLine(vm: vm, irq: gsi) { logger.error("\($0)") } })
        try bus.install(mmioBus: mmio, pioBus: pio)
    }

    /// Wraps a virtio device model in the virtio-pci transport and attaches it.
    func attachVirtio(_ device: VirtioDevice, name: String, memory: GuestMemoryAccess, logger: Logger) throws {
        var address: PCIAddress?
        let transport = try VirtioPCIDevice(device: device, memory: memory) { error in
            // The guest broke the virtio protocol: the device is now in
            // DEVICE_NEEDS_RESET; the VMM keeps running.
            logger.warning("guest error: \(name) at \(address.map { "\($0)" } ?? "?"): \(error)")
        }
        let a = try bus.attach(transport)
        address = a
        attached.append((a, name))
        logger.info("pci \(a): \(name)")
    }

    func attachConfiguredDevices(config: VMConfig, memory: GuestMemoryAccess, consoleOutput: ConsoleOutput?, logger: Logger) throws {
        if let out = consoleOutput {
            let c = VirtioConsole(output: out)
            try attachVirtio(c, name: "virtio-console (hvc0)", memory: memory, logger: logger)
            virtioConsole = c
        }
        if config.rng {
            try attachVirtio(VirtioRNG(), name: "virtio-rng", memory: memory, logger: logger)
        }
    }
}
