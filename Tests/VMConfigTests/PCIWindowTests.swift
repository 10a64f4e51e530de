import VMConfig
import XCTest

/// `machine.pci_mmio64_size`: the guest's 64-bit PCI window.
final class PCIWindowTests: XCTestCase {
    func testDefaultIs64GiB() throws {
        XCTAssertEqual(try config(kernelOnly).pciMMIO64Size, 64 << 30)
        XCTAssertEqual(VMConfig(kernelPath: "/k").pciMMIO64Size, 64 << 30)
    }

    func testWholeGiBAccepted() throws {
        XCTAssertEqual(try config("[machine]\npci_mmio64_size = \"4G\"\n" + kernelOnly).pciMMIO64Size, 4 << 30)
        XCTAssertEqual(try config("[machine]\npci_mmio64_size = \"1T\"\n" + kernelOnly).pciMMIO64Size, 1 << 40)
    }

    func testBadSizesNameTheKey() {
        for (value, text) in [("\"1536M\"", "whole number of GiB"), ("\"0\"", "whole number of GiB"),
                              ("\"2T\"", "whole number of GiB"), ("\"big\"", "is not a size"), ("64", "expected a size")] {
            let found = issues("[machine]\npci_mmio64_size = \(value)\n" + kernelOnly)
            XCTAssertEqual(found.count, 1, "\(value): \(found)")
            XCTAssertTrue(found.first?.contains("machine.pci_mmio64_size") == true && found.first?.contains(text) == true,
                          "\(value): \(found)")
        }
    }
}
