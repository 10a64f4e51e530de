import Devices

/// Sends accesses in one window (the 32-bit or 64-bit MMIO window, or the
/// I/O port window: the same router serves memory and port I/O) to whichever
/// device BAR decodes the address at the moment of the access. Insert at the
/// window's base with its size. An access not wholly inside one decoded BAR
/// reads all ones (master abort) and writes are dropped.
public final class PCIWindowRouter: BusDevice {
    public enum Space: Equatable, Sendable { case memory, io }

    public let window: PCIAddressWindow
    public let space: Space
    private let routes: PCIRouteTable

    init(window: PCIAddressWindow, space: Space, routes: PCIRouteTable) {
        self.window = window
        self.space = space
        self.routes = routes
    }

    public func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        let (address, o) = window.base.addingReportingOverflow(offset)
        guard !o, let (device, index, rel) = routes.lookup(address, count: data.count, space: space) else {
            fillAllOnes(data)
            return
        }
        device.readBar(index, offset: rel, data: data)
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        let (address, o) = window.base.addingReportingOverflow(offset)
        guard !o, let (device, index, rel) = routes.lookup(address, count: data.count, space: space) else { return }
        device.writeBar(index, offset: rel, data: data)
    }
}
