import Bits
import HostSys
import PCI
import VFIO
import VFIOUser

/// What the passthrough glue (`PassthroughDevice`) needs of a device it puts
/// in the guest, whoever serves it: the kernel through a VFIO cdev
/// (`AssignedVFIODevice`) or another process over vfio-user
/// (`VFIOUserDevice`). Both keep VFIO's region and IRQ numbering, so one PCI
/// model, one BAR placement and one interrupt routing serve both.
protocol AssignedDeviceFile: AnyObject, Sendable {
    /// The size of region `index` (VFIO's numbering: BARs 0-5, ROM 6,
    /// config 7), nil when the device has no such region.
    func regionSize(_ index: UInt32) -> UInt64?
    func readConfig(offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool
    func writeConfig(offset: Int, from buffer: UnsafeRawBufferPointer) -> Bool
    func readRegion(_ index: UInt32, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool
    func writeRegion(_ index: UInt32, offset: UInt64, from buffer: UnsafeRawBufferPointer) -> Bool
    func mappableAreas(_ index: UInt32) -> [Range<UInt64>]
    func mapRegion(_ index: UInt32, offset: UInt64, length: UInt64) throws -> UnsafeMutableRawPointer
    /// INTx through `trigger`; `resample` is signalled at the guest's EOI.
    func enableINTx(trigger: Int32, resample: Int32) throws
    func enableMSI(eventfds: [Int32]) throws
    func enableMSIX(eventfds: [Int32]) throws
    /// Turns off what `mode` turned on.
    func disable(_ mode: AssignedInterruptMode) throws
    /// Resets the device the best way it has: what the log says.
    func resetForExit() throws -> String
    func close()
}

extension AssignedDeviceFile {
    /// BARs 0-5 that exist, by index, with their region sizes.
    var barSizes: [Int: UInt64] {
        var sizes: [Int: UInt64] = [:]
        for i in 0..<6 { if let size = regionSize(UInt32(i)), size > 0 { sizes[i] = size } }
        return sizes
    }
    /// The expansion ROM's size (region 6), if it has one.
    var romSize: UInt64? { regionSize(6).flatMap { $0 > 0 ? $0 : nil } }

    /// "vvvv:dddd", vendor and device ID from config space, for the log
    /// ("ffff:ffff" when they cannot be read).
    var pciID: String {
        var id = [UInt8](repeating: 0xFF, count: 4)
        id.withUnsafeMutableBytes { _ = readConfig(offset: 0, into: $0) }
        let vendor = UInt16(id[0]) | UInt16(id[1]) << 8, device = UInt16(id[2]) | UInt16(id[3]) << 8
        return hexDigits(vendor, width: 4) + ":" + hexDigits(device, width: 4)
    }
}

extension AssignedVFIODevice: AssignedDeviceFile {
    func regionSize(_ index: UInt32) -> UInt64? { regions[index]?.size }
    func enableINTx(trigger: Int32, resample: Int32) throws { try enableINTx(trigger: trigger, resample: Optional(resample)) }
    func disable(_ mode: AssignedInterruptMode) throws {
        switch mode {
        case .none: break
        case .intx: try disableIRQs(.intx)
        case .msi: try disableIRQs(.msi)
        case .msix: try disableIRQs(.msix)
        }
    }
    func resetForExit() throws -> String { try reset().text }
}

extension VFIOUserDevice: AssignedDeviceFile {
    func regionSize(_ index: UInt32) -> UInt64? { regions[index]?.size }
    func enableINTx(trigger: Int32, resample: Int32) throws { try enableINTx(trigger: trigger, resample: Optional(resample)) }
    func disable(_ mode: AssignedInterruptMode) throws {
        switch mode {
        case .none: break
        case .intx: try disableIRQs(VFIOUserDevice.intxIndex)
        case .msi: try disableIRQs(VFIOUserDevice.msiIndex)
        case .msix: try disableIRQs(VFIOUserDevice.msixIndex)
        }
    }
    func resetForExit() throws -> String { try reset() }
}
