import ACPI
import Bits
import FoundationEssentials
import GuestMemory
import Logging
import PCI
import VFIO
import Virtio
import VMConfig

/// The guest's vIOMMU (`[viommu]`, `--viommu`): a virtio-iommu on the PCI
/// bus, after every other device, with the devices the config puts behind it
/// as its endpoints (VIRTIO_F_ACCESS_PLATFORM on the virtio ones), described
/// to the guest by an ACPI VIOT table. Built in steps, as the machine is:
/// `init` before the devices, `addAssigned` once the assigned devices are on
/// the bus, `attach` last.
final class MachineVIOMMU: Sendable {
    let endpoints: VIOMMUEndpoints
    let device: VirtioIOMMU
    private let placed = PlacedAddress()

    init(config: VIOMMUConfig, ram: GuestRAM, passthrough: MachinePassthrough, logger: Logger) throws {
        let ramRanges = ram.slots.map { (guest: $0.guestBase, host: $0.hostAddress, size: $0.size) }
        var domains: GuestDomains?
        if let ctx = passthrough.context {
            domains = GuestDomains(identity: ctx, guestRAM: ramRanges,
                                   limits: GuestDomains.Limits(maxDomains: config.maxDomains,
                                                               maxMappingsPerDomain: config.maxMappingsPerDomain))
        }
        endpoints = VIOMMUEndpoints(ram: ramRanges.map { (guest: $0.guest, size: $0.size) }, domains: domains,
                                    initialBypass: true, logger: logger)
        // With assigned devices the guest's domains become host IOASes: offer
        // what the host IOMMU can do (page sizes, usable IOVAs).
        var pageSizes = VirtioIOMMU.defaultPageSizeMask
        var input = VirtioIOMMU.defaultInputRange
        if let domains {
            pageSizes = try domains.pageSizeMask
            input = try domains.usableIOVARange
        }
        // Polling needs a CPU besides the guest's spinning vCPU.
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        let pollUs = cpus > 1 ? config.pollMicroseconds : 0
        device = VirtioIOMMU(host: endpoints, pageSizeMask: pageSizes, inputRange: input, initialBypass: true,
                             maxDomains: config.maxDomains, maxMappingsPerDomain: config.maxMappingsPerDomain,
                             pollWindow: .microseconds(pollUs))
        if pollUs != config.pollMicroseconds {
            logger.info("viommu: request polling off: this host has \(cpus) CPU (poll_us = \(config.pollMicroseconds) needs 2)")
        }
        logger.info("viommu: virtio-iommu with page sizes 0x\(String(pageSizes, radix: 16)), IOVAs 0x\(String(input.lowerBound, radix: 16))-0x\(String(input.upperBound, radix: 16)), at most \(config.maxDomains) domains of \(config.maxMappingsPerDomain) mappings, requests polled for \(pollUs) us after each")
    }

    /// Puts the assigned devices whose entry says `iommu = true` behind it.
    func addAssigned(_ passthrough: MachinePassthrough) {
        for d in passthrough.devices where d.behindVIOMMU {
            guard let a = d.address, let vfio = d.vfio else { continue }
            endpoints.addAssigned(at: a, name: "\(a) (passthrough \(d.name))", device: vfio)
        }
    }

    /// Attaches the virtio-iommu itself (not behind itself: identity DMA);
    /// returns its address, or nil when nothing is behind it (then there is
    /// no vIOMMU at all, and the log says why).
    func attach(to pci: MachinePCI, memory: GuestMemoryAccess, logger: Logger) throws -> PCIAddress? {
        guard !endpoints.endpoints.isEmpty else {
            logger.warning("viommu: no PCI device is behind it (there are none, or every one has iommu = false): the guest gets no vIOMMU")
            return nil
        }
        let a = try pci.attachVirtio(device, name: "virtio-iommu (\(endpoints.endpoints.count) endpoints)", thread: "io-iommu",
                                     memory: memory, viommu: nil, logger: logger)
        placed.address = a.address
        return a.address
    }

    /// The VIOT description, once attached.
    func acpiDescription() throws -> ACPIMachine.VirtioIOMMU? {
        guard let a = placed.address else { return nil }
        let rids = endpoints.endpoints.keys.sorted().map { UInt16(truncatingIfNeeded: $0) }
        return try ACPIMachine.VirtioIOMMU(bdf: UInt16(truncatingIfNeeded: VIOMMUEndpoints.endpointID(a)), endpointRIDs: rids)
    }

    /// The exit line: what the guest asked and what came of it.
    func summary() -> String {
        let s = device.statistics
        let errors = s.errors.values.reduce(0, +)
        var line = "viommu: \(s.attaches) attach, \(s.detaches) detach, \(s.maps) map, \(s.unmaps) unmap, \(s.probes) probe, "
            + "\(errors) error, \(endpoints.counters.faults) fault; \(s.faultsReported) fault events reported, \(s.faultsDropped) dropped; \(s.polled) requests found by polling"
        if s.requests > 0 {
            let us = Double(s.servingNanoseconds) / 1000
            line += "; \(decimal(us / 1000, digits: 1)) ms serving them (\(decimal(us / Double(s.requests), digits: 1)) us per request)"
        }
        if !s.errors.isEmpty {
            line += "; errors: " + s.errors.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        }
        if let d = endpoints.domains {
            let c = d.counters
            line += "; assigned devices: \(c.attaches) attach, \(c.maps) IOAS map, \(c.unmaps) IOAS unmap, peak \(formatBytes(c.peakPinnedBytes)) pinned"
        }
        return line
    }

    /// At exit, after the assigned devices are closed: the guest domains' IOASes go.
    func shutdown(logger: Logger) {
        do { try endpoints.domains?.close() } catch { logger.warning("viommu: closing guest domains: \(error)") }
    }
}
