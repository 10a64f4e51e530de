import ArgumentParser
import Foundation
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

    func run() throws {
        let listing = DeviceListing(discovery: SysfsDiscovery(root: sysfs))
        print(json ? try listing.json() : listing.text())
    }
}
