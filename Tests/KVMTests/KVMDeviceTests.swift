import CShim
import XCTest
@testable import KVM

final class KVMDeviceTests: XCTestCase {
    func testVFIOFileAttributeEncoding() {
        let add = KVMDevice.vfioFileAttribute(SHIM_KVM_DEV_VFIO_FILE_ADD, fdAddress: 0x7FFF_1234_5678)
        XCTAssertEqual(add.group, SHIM_KVM_DEV_VFIO_FILE)
        XCTAssertEqual(add.attr, 1, "KVM_DEV_VFIO_FILE_ADD")
        XCTAssertEqual(add.addr, 0x7FFF_1234_5678, "the address of the __s32 fd")
        XCTAssertEqual(add.flags, 0)
        XCTAssertEqual(KVMDevice.vfioFileAttribute(SHIM_KVM_DEV_VFIO_FILE_DEL, fdAddress: 0).attr, 2)
        XCTAssertEqual(KVMDevice.Kind.vfio.type, SHIM_KVM_DEV_TYPE_VFIO)
    }
}

final class FlexibleArrayTests: XCTestCase {
    func testHeaderThenZeroedEntries() {
        var h = kvm_msrs()
        h.nmsrs = 3
        let seen: (UInt32, Int, [UInt64], Int) = withFlexibleArray(h, count: 3, of: kvm_msr_entry.self) { header, entries in
            let start = UnsafeRawPointer(header)
            let offset = UnsafeRawPointer(entries.baseAddress!) - start
            let zeroed = entries.map { $0.data }
            entries[2].data = 0xDEAD // the last entry is writable
            return (header.pointee.nmsrs, entries.count, zeroed, offset)
        }
        XCTAssertEqual(seen.0, 3)
        XCTAssertEqual(seen.1, 3)
        XCTAssertEqual(seen.2, [0, 0, 0])
        XCTAssertEqual(seen.3, 8, "entries follow the 8-byte header, as the C flexible array does")
    }
}
