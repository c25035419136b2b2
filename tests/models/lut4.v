// Behavioural model of the ECP5 LUT4, for the equivalence tests of hw/systolic/pe.py (its DSP
// control pins are driven by constant LUT4s): Z is bit {D, C, B, A} of INIT.
module LUT4(input A, input B, input C, input D, output Z);
    parameter [15:0] INIT = 16'h0000;
    assign Z = INIT[{D, C, B, A}];
endmodule
