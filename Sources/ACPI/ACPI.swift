// ACPI tables and AML.
