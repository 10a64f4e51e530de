import Bits
import FoundationEssentials

/// What `swiftvmm devices` prints: the host's PCI devices, whether each can
/// be assigned, and what assigning it would do to the guest's WBINVD.
public struct DeviceListing: Codable, Equatable, Sendable {
    public let sysfsRoot: String
    /// False when the kernel made no IOMMU groups: nothing can be assigned.
    public let iommuEnabled: Bool
    public let iommuGroups: Int
    /// A summary line for people (and scripts that only want one line).
    public let message: String
    public let devices: [HostPCIDevice]

    public static let noIOMMUMessage =
        "no IOMMU groups: this host has no IOMMU enabled (intel_iommu=on / amd_iommu=on), nothing can be assigned"

    public init(discovery: SysfsDiscovery) {
        let groups = discovery.iommuGroupCount()
        let devices = discovery.devices()
        sysfsRoot = discovery.root
        iommuEnabled = groups > 0
        iommuGroups = groups
        self.devices = devices
        if groups == 0 {
            message = Self.noIOMMUMessage
        } else {
            let n = devices.filter(\.viable).count
            message = "\(devices.count) PCI device\(devices.count == 1 ? "" : "s") in \(groups) IOMMU group\(groups == 1 ? "" : "s"); \(n) assignable now"
        }
    }

    /// Pretty-printed JSON with sorted keys (stable for scripts and tests).
    public func json() throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try e.encode(self), as: UTF8.self)
    }

    /// The text listing.
    public func text() -> String {
        var out = [message]
        guard iommuEnabled else {
            if !devices.isEmpty { out.append("(\(devices.count) PCI devices seen under \(sysfsRoot)/bus/pci/devices, none in an IOMMU group)") }
            return out.joined(separator: "\n")
        }
        for d in devices {
            out.append("")
            let ids = "\(hex4(d.vendorID)):\(hex4(d.deviceID))"
            let cls = d.classCode.map { hexDigits($0, width: 6) } ?? "?"
            out.append("\(d.bdf)  [\(ids)] class \(cls)  driver \(d.driver ?? "none")")
            if let g = d.iommuGroup {
                let peers = d.groupPeers.isEmpty ? "no other members"
                    : "also " + d.groupPeers.map { "\($0.bdf) (\($0.driver ?? "no driver")\($0.isBridge ? ", bridge" : ""))" }.joined(separator: ", ")
                out.append("  IOMMU group \(g): \(peers)")
            } else {
                out.append("  IOMMU group: none")
            }
            out.append("  assignable: \(d.viable ? "yes" : "no") - \(d.viability.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\n    "))")
            out.append("  cdev: \(d.cdev ?? "none")")
            if let m = d.iommu {
                let sc = m.canEnforceSnoop.map { $0 ? "yes" : "no" } ?? "unknown"
                out.append("  IOMMU: \(m.name) (\(m.info.name)), forces snoop: \(sc)")
            } else {
                out.append("  IOMMU: none")
            }
            let ns = d.noSnoopEnabled.map { $0 ? "enabled" : "disabled" } ?? "unknown"
            out.append("  PCIe No Snoop: \(ns)\(d.noSnoopNote.map { " (\($0))" } ?? "")")
            out.append("  \(d.wbinvd)")
        }
        return out.joined(separator: "\n")
    }

    private func hex4(_ v: UInt16?) -> String { v.map { hexDigits($0, width: 4) } ?? "????" }
}
