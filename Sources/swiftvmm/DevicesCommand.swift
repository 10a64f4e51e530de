import ArgumentParser
import FoundationEssentials
import VFIO

/// `swiftvmm devices`: which host PCI devices could be assigned to a guest.
struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "List host PCI devices that could be assigned to a guest (VFIO + iommufd).",
        discussion: """
            For each PCI device: its address and ids, driver, IOMMU group and the group's
            other members, whether it can be assigned now (and the commands to fix it if
            not), its VFIO cdev, the IOMMU it sits behind and whether that IOMMU forces
            DMA to snoop the CPU caches, and what assigning it would do to the guest's
            WBINVD. Reads sysfs only; needs no privileges (the No Snoop bit needs root to
            read past the first 64 bytes of config space).
            """
    )

    @Flag(help: "Machine-readable JSON instead of text.")
    var json = false

    @Option(help: "The sysfs root to read (for tests and chroots).")
    var sysfs = "/sys"

    @Option(name: .customLong("probe"), help: ArgumentHelp(
        "Drive the real iommufd + VFIO cdev flow on this vfio-pci device (no VM): IOAS, IOVA ranges, a timed 64 MiB DMA map/unmap, bind, IOMMU hw info, attach, region and IRQ info, reset. Needs root.",
        valueName: "BDF"))
    var probe: String?

    func run() throws {
        if let bdf = probe {
            let d = SysfsDiscovery(root: sysfs)
            let report = try DeviceProbe.run(bdf: bdf.contains(":") && bdf.split(separator: ":").count == 2 ? "0000:" + bdf : bdf, discovery: d)
            if json {
                let e = JSONEncoder()
                e.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try e.encode(report), as: UTF8.self))
            } else {
                print(report.text())
            }
            return
        }
        let listing = DeviceListing(discovery: SysfsDiscovery(root: sysfs))
        print(json ? try listing.json() : listing.text())
    }
}
