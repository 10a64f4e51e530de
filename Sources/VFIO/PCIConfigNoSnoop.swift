import Bits

/// The PCIe "Enable No Snoop" bit of a device, from its config space bytes
/// (`/sys/bus/pci/devices/BDF/config`). The bytes are untrusted: the file may
/// be short (an unprivileged read returns only the first 64 bytes) and the
/// capability list may loop or point outside.
public enum NoSnoopState: Equatable, Sendable {
    case enabled
    case disabled
    /// A conventional PCI device: no PCIe capability, no No Snoop control.
    case noPCIeCapability
    /// The state cannot be read; the reason says why.
    case unknown(String)

    public var isEnabled: Bool? {
        switch self {
        case .enabled: return true
        case .disabled, .noPCIeCapability: return false
        case .unknown: return nil
        }
    }
}

/// Why a config space could not be walked.
public struct ConfigSpaceProblem: Error, Equatable, Sendable {
    public let message: String
    init(_ message: String) { self.message = message }
}

public enum PCIConfigParser {
    /// PCI Local Bus 3.0, 6.2.3: Status register at 0x06, bit 4 Capabilities List.
    static let statusOffset = 0x06
    static let statusCapList: UInt16 = 1 << 4
    /// 6.7: Capabilities Pointer at 0x34; capabilities live above the 64-byte header.
    static let capPointerOffset = 0x34
    static let headerSize = 0x40
    /// PCIe Base 4.0, 7.5.3: PCI Express Capability ID 0x10; Device Control at +8;
    /// bit 11 Enable No Snoop (7.5.3.4).
    static let pcieCapabilityID: UInt8 = 0x10
    static let deviceControlOffset = 8
    static let enableNoSnoop: UInt16 = 1 << 11
    /// 256 bytes of config space hold at most (256 - 64) / 4 = 48 capabilities.
    static let maxCapabilities = 48

    /// Offset of capability `id` in `config`, walking the list safely.
    public static func findCapability(_ id: UInt8, in config: [UInt8]) -> Result<Int?, ConfigSpaceProblem> {
        guard config.count >= headerSize else {
            return .failure(ConfigSpaceProblem("config space is only \(config.count) bytes (the header alone is 64)"))
        }
        guard let status = LE.u16(config, statusOffset), status & statusCapList != 0 else { return .success(nil) }
        var pointer = Int(config[capPointerOffset] & 0xFC)
        var seen = Set<Int>()
        while pointer != 0 {
            guard pointer >= headerSize else { return .failure(ConfigSpaceProblem("capability pointer \(hex(pointer)) points into the header")) }
            guard pointer + 2 <= config.count else {
                return .failure(ConfigSpaceProblem("config space is truncated at \(config.count) bytes (capability at \(hex(pointer))); reading all of it needs root"))
            }
            guard seen.insert(pointer).inserted, seen.count <= maxCapabilities else {
                return .failure(ConfigSpaceProblem("capability list loops at \(hex(pointer))"))
            }
            if config[pointer] == id { return .success(pointer) }
            pointer = Int(config[pointer + 1] & 0xFC)
        }
        return .success(nil)
    }

    /// The device's Enable No Snoop bit.
    public static func noSnoop(config: [UInt8]) -> NoSnoopState {
        switch findCapability(pcieCapabilityID, in: config) {
        case let .failure(problem): return .unknown(problem.message)
        case .success(nil): return .noPCIeCapability
        case let .success(cap?):
            let at = cap + deviceControlOffset
            guard let control = LE.u16(config, at) else {
                return .unknown("config space is truncated at \(config.count) bytes (Device Control at \(hex(at))); reading all of it needs root")
            }
            return control & enableNoSnoop != 0 ? .enabled : .disabled
        }
    }

    /// PCIe Base 4.0, 7.5.3.3: Device Capabilities at +4, bit 28 Function Level
    /// Reset Capability. PCI Advanced Features (ECN, capability ID 0x13): AF
    /// Capabilities at +3, bit 1 FLR (with bit 0, Transactions Pending).
    static let deviceCapabilitiesOffset = 4
    static let deviceCapabilitiesFLR: UInt32 = 1 << 28
    static let advancedFeaturesCapabilityID: UInt8 = 0x13
    static let advancedFeaturesFLR: UInt8 = 1 << 1

    /// Whether the device can do a function-level reset; false when the
    /// config space cannot be walked.
    public static func hasFunctionLevelReset(config: [UInt8]) -> Bool {
        if case let .success(cap?) = findCapability(pcieCapabilityID, in: config) {
            let at = cap + deviceCapabilitiesOffset
            if let capabilities = LE.u32(config, at), capabilities & deviceCapabilitiesFLR != 0 { return true }
        }
        if case let .success(cap?) = findCapability(advancedFeaturesCapabilityID, in: config) {
            if cap + 4 <= config.count, config[cap + 3] & advancedFeaturesFLR != 0 { return true }
        }
        return false
    }
}
