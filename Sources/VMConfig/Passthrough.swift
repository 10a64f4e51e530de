import Bits
import HostSys

/// A host PCI device assigned to the guest (`[[passthrough]]` or
/// `--passthrough`) through iommufd and its VFIO cdev.
public struct PassthroughConfig: Equatable, Sendable, CustomStringConvertible {
    /// How the device is named.
    public enum Device: Equatable, Sendable {
        /// A host PCI address, normalized: "0000:03:00.0" (4-digit domain,
        /// lower-case hex), the name of its directory in /sys/bus/pci/devices.
        case pciAddress(String)
        /// The device's VFIO cdev, an absolute path under /dev/vfio/devices/,
        /// or "fd:N", the cdev a launcher opened and passed (`PassedDescriptor`).
        case cdev(String)
    }

    public let device: Device
    /// BAR index (0...5) -> guest-physical address the VMM must place that
    /// BAR at. BARs not listed are allocated from the PCI windows.
    public let barAddresses: [Int: UInt64]
    /// Behind the vIOMMU when there is one (`iommu = false`: outside it, on
    /// the IOAS with all guest RAM at IOVA == guest physical address).
    public let iommu: Bool

    public init(device: Device, barAddresses: [Int: UInt64] = [:], iommu: Bool = true) {
        self.device = device
        self.barAddresses = barAddresses
        self.iommu = iommu
    }

    /// The PCI address or the cdev path, as the config would write it.
    public var description: String {
        switch device {
        case let .pciAddress(bdf): return bdf
        case let .cdev(path): return path
        }
    }
}

/// A PCI device served by another process over vfio-user (`[[vfio_user]]`).
public struct VFIOUserConfig: Equatable, Sendable, CustomStringConvertible {
    /// How the server reaches guest RAM.
    public enum DMA: String, Equatable, Sendable {
        /// Guest RAM's memfds are passed: the server maps them and does DMA
        /// itself, at memory speed, with access to all of guest RAM.
        case fd
        /// No descriptor is passed: every transfer is a DMA_READ/DMA_WRITE
        /// message the VMM checks against the mapped windows.
        case message
    }

    /// Absolute path of the server's listening socket.
    public let socket: String
    public let dma: DMA
    /// BAR index (0...5) -> guest-physical address, as for `[[passthrough]]`.
    public let barAddresses: [Int: UInt64]

    public init(socket: String, dma: DMA = .fd, barAddresses: [Int: UInt64] = [:]) {
        self.socket = socket
        self.dma = dma
        self.barAddresses = barAddresses
    }

    public var description: String { socket }
}

/// PCI addresses and limits of `[[passthrough]]`.
enum Passthrough {
    /// A type 0 header has six BARs (PCI Local Bus Specification 3.0,
    /// section 6.2.5.1, offsets 0x10-0x24).
    static let barIndices = 0...5
    /// PCI devices per bus and functions per device (PCI Local Bus
    /// Specification 3.0, section 3.2.2.3.1: 5-bit device, 3-bit function).
    static let maxDevice = 0x1F
    static let maxFunction = 7
    /// x86-64 physical addresses have at most 52 bits (Intel SDM Vol. 3A,
    /// 4.1.4 "MAXPHYADDR"; AMD APM Vol. 2, 5.3.3), so a BAR must end below 2^52.
    static let addressLimit: UInt64 = 1 << 52
    /// Where the kernel makes VFIO device cdevs (drivers/vfio/device_cdev.c,
    /// "vfio/devices/vfio%d").
    static let cdevDirectory = "/dev/vfio/devices/"

    /// "DDDD:BB:DD.F" or "BB:DD.F" in hex, either case -> "dddd:bb:dd.f";
    /// nil if `text` does not have that shape. Device and function ranges
    /// are judged by `Check.passthroughDevice`, so this returns the numbers.
    static func parseAddress(_ text: String) -> (domain: Int, bus: Int, device: Int, function: Int)? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3 else { return nil }
        let slotFunction = parts[parts.count - 1].split(separator: ".", omittingEmptySubsequences: false)
        guard slotFunction.count == 2 else { return nil }
        guard let bus = hex(parts[parts.count - 2], digits: 2),
              let device = hex(slotFunction[0], digits: 2),
              let function = hex(slotFunction[1], digits: 1) else { return nil }
        var domain = 0
        if parts.count == 3 {
            guard let d = hex(parts[0], digits: 4) else { return nil }
            domain = d
        }
        return (domain, bus, device, function)
    }

    /// 1...`digits` hex digits, nothing else (no sign, no 0x).
    private static func hex(_ s: Substring, digits: Int) -> Int? {
        guard !s.isEmpty, s.count <= digits, s.allSatisfy(\.isHexDigit) else { return nil }
        return Int(s, radix: 16)
    }

    static func format(domain: Int, bus: Int, device: Int, function: Int) -> String {
        "\(hexDigits(domain, width: 4)):\(hexDigits(bus, width: 2)):\(hexDigits(device, width: 2)).\(function)"
    }
}

extension Check {
    /// The `device` of a `[[passthrough]]` entry or a `--passthrough` value.
    static func passthroughDevice(_ text: String) -> Result<PassthroughConfig.Device, Failure> {
        let shown = KeyPath.quoteValue(text)
        if text.isEmpty { return .failure(Failure("must not be empty")) }
        if let passed = PassedDescriptor.parse(text) {
            // A VFIO cdev a launcher opened: checked when it is taken.
            switch passed {
            case .success: return .success(.cdev(text))
            case let .failure(p): return .failure(Failure(p.description))
            }
        }
        if text.contains("/") {
            guard text.hasPrefix("/") else {
                return .failure(Failure("\(shown) is a relative path; a VFIO cdev is an absolute path "
                    + "under \(Passthrough.cdevDirectory) (e.g. \"/dev/vfio/devices/vfio0\")"))
            }
            guard text.hasPrefix(Passthrough.cdevDirectory) else {
                let legacy = text.hasPrefix("/dev/vfio/")
                    ? " (/dev/vfio/N is a legacy VFIO group; swiftvmm opens the device's cdev, "
                        + "listed by `swiftvmm devices`)"
                    : ""
                return .failure(Failure("\(shown) is not under \(Passthrough.cdevDirectory); "
                    + "a VFIO cdev is e.g. \"/dev/vfio/devices/vfio0\"" + legacy))
            }
            let name = text.dropFirst(Passthrough.cdevDirectory.count)
            guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
                return .failure(Failure("\(shown) does not name a file directly in \(Passthrough.cdevDirectory) "
                    + "(e.g. \"/dev/vfio/devices/vfio0\")"))
            }
            return .success(.cdev(text))
        }
        guard let a = Passthrough.parseAddress(text) else {
            return .failure(Failure("\(shown) is neither a PCI address (DDDD:BB:DD.F or BB:DD.F in hex, "
                + "e.g. \"0000:03:00.0\") nor a VFIO cdev path (e.g. \"/dev/vfio/devices/vfio0\")"))
        }
        if a.device > Passthrough.maxDevice {
            return .failure(Failure("\(shown): device 0x\(String(a.device, radix: 16)) is out of range "
                + "(0 to 0x\(String(Passthrough.maxDevice, radix: 16)))"))
        }
        if a.function > Passthrough.maxFunction {
            return .failure(Failure("\(shown): function \(a.function) is out of range (0 to \(Passthrough.maxFunction))"))
        }
        return .success(.pciAddress(Passthrough.format(domain: a.domain, bus: a.bus, device: a.device, function: a.function)))
    }

    /// A `bars` key: "0" ... "5".
    static func barIndex(_ key: String) -> Result<Int, Failure> {
        guard let n = Int(key), String(n) == key, Passthrough.barIndices.contains(n) else {
            return .failure(Failure("\(KeyPath.quoteValue(key)) is not a BAR index "
                + "(\(Passthrough.barIndices.lowerBound) to \(Passthrough.barIndices.upperBound))"))
        }
        return .success(n)
    }

    /// A `bars` value: a guest-physical address, non-zero, 4 KiB aligned,
    /// below 2^52.
    static func barAddress(_ n: Int) -> Result<UInt64, Failure> {
        let shown = n < 0 ? "\(n)" : "0x" + String(n, radix: 16)
        guard n > 0, let a = UInt64(exactly: n) else {
            return .failure(Failure("\(shown) is not a guest-physical address above 0"))
        }
        if a % Schema.pageSize != 0 {
            return .failure(Failure("\(shown) is not 4K aligned (BARs are mapped in 4 KiB pages)"))
        }
        if a >= Passthrough.addressLimit {
            return .failure(Failure("\(shown) is not below 0x\(String(Passthrough.addressLimit, radix: 16)) "
                + "(2^52, the x86-64 physical address limit)"))
        }
        return .success(a)
    }
}
