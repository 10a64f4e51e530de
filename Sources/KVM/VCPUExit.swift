import CShim

/// Why KVM_RUN returned, decoded from struct kvm_run in one place.
public enum VCPUExit: Equatable, Sendable {
    /// Port I/O. The data (size * count bytes) is in the run page at `dataOffset`.
    case io(IOExit)
    /// An access to guest-physical memory no slot backs. For writes, `data` holds
    /// the bytes; for reads the handler stores the result in the run page.
    case mmio(address: UInt64, length: Int, isWrite: Bool, data: [UInt8])
    case hlt
    /// Triple fault (or an INIT the VMM must handle).
    case shutdown
    case failEntry(reason: UInt64, cpu: UInt32)
    case internalError(suberror: UInt32, data: [UInt64])
    case systemEvent(type: UInt32)
    case exception(number: UInt32, errorCode: UInt32)
    case irqWindowOpen
    /// KVM_RUN returned EINTR (the vCPU was kicked) or KVM_EXIT_INTR.
    case interrupted
    case unknown(reason: UInt32)

    public struct IOExit: Equatable, Sendable {
        public let isOut: Bool
        public let port: UInt16
        public let size: Int
        public let count: Int
        public let dataOffset: Int

        public init(isOut: Bool, port: UInt16, size: Int, count: Int, dataOffset: Int) {
            self.isOut = isOut; self.port = port; self.size = size; self.count = count; self.dataOffset = dataOffset
        }
    }

    /// Decodes a kvm_run page. Values are bounded so a bad page cannot make
    /// the VMM read outside it: an out-of-bounds PIO data range is `.unknown`.
    public static func decode(_ run: UnsafeRawBufferPointer) -> VCPUExit {
        guard run.count >= SHIM_RUN_SIZE else { return .unknown(reason: UInt32.max) }
        func u8(_ o: Int) -> UInt8 { run.loadUnaligned(fromByteOffset: o, as: UInt8.self) }
        func u16(_ o: Int) -> UInt16 { run.loadUnaligned(fromByteOffset: o, as: UInt16.self) }
        func u32(_ o: Int) -> UInt32 { run.loadUnaligned(fromByteOffset: o, as: UInt32.self) }
        func u64(_ o: Int) -> UInt64 { run.loadUnaligned(fromByteOffset: o, as: UInt64.self) }

        let reason = u32(SHIM_RUN_EXIT_REASON)
        switch reason {
        case SHIM_KVM_EXIT_IO:
            let size = Int(u8(SHIM_RUN_IO_SIZE))
            let count = Int(u32(SHIM_RUN_IO_COUNT))
            let off = u64(SHIM_RUN_IO_DATA_OFFSET)
            let (bytes, o1) = size.multipliedReportingOverflow(by: count)
            guard [1, 2, 4].contains(size), !o1, off <= UInt64(run.count), bytes <= run.count - Int(off) else {
                return .unknown(reason: reason)
            }
            return .io(IOExit(isOut: u8(SHIM_RUN_IO_DIRECTION) == SHIM_KVM_EXIT_IO_OUT,
                              port: u16(SHIM_RUN_IO_PORT), size: size, count: count, dataOffset: Int(off)))
        case SHIM_KVM_EXIT_MMIO:
            let len = Int(min(u32(SHIM_RUN_MMIO_LEN), 8))
            let isWrite = u8(SHIM_RUN_MMIO_IS_WRITE) != 0
            let data = isWrite ? Array(run[SHIM_RUN_MMIO_DATA..<(SHIM_RUN_MMIO_DATA + len)]) : []
            return .mmio(address: u64(SHIM_RUN_MMIO_PHYS_ADDR), length: len, isWrite: isWrite, data: data)
        case SHIM_KVM_EXIT_HLT: return .hlt
        case SHIM_KVM_EXIT_SHUTDOWN: return .shutdown
        case SHIM_KVM_EXIT_FAIL_ENTRY:
            return .failEntry(reason: u64(SHIM_RUN_FAIL_ENTRY_REASON), cpu: u32(SHIM_RUN_FAIL_ENTRY_CPU))
        case SHIM_KVM_EXIT_INTERNAL_ERROR:
            let n = Int(min(u32(SHIM_RUN_INTERNAL_NDATA), 16)) // KVM_INTERNAL_ERR_DATA has 16 u64s
            return .internalError(suberror: u32(SHIM_RUN_INTERNAL_SUBERROR),
                                  data: (0..<n).map { u64(SHIM_RUN_INTERNAL_DATA + 8 * $0) })
        case SHIM_KVM_EXIT_SYSTEM_EVENT: return .systemEvent(type: u32(SHIM_RUN_SYSTEM_EVENT_TYPE))
        case SHIM_KVM_EXIT_EXCEPTION:
            return .exception(number: u32(SHIM_RUN_EX_EXCEPTION), errorCode: u32(SHIM_RUN_EX_ERROR_CODE))
        case SHIM_KVM_EXIT_IRQ_WINDOW_OPEN: return .irqWindowOpen
        case SHIM_KVM_EXIT_INTR: return .interrupted
        default: return .unknown(reason: reason)
        }
    }
}
