// Behavioural model of the ECP5 MULT18X18D (18x18 multiplier), for the equivalence test of
// hw/systolic/pe.py only. yosys ships MULT18X18D as a blackbox (share/ecp5/cells_bb.v) without a
// simulation model, so this one is written from Lattice's ECP5 sysDSP usage guide (FPGA-TN-02205):
// optional input registers on A and B (with the operand sign controls), an optional pipeline
// register after the multiplier and an optional output register, each clocked, enabled and reset
// by the CLKn / CEn / RSTn its REG_*_CLK / _CE / _RST parameters name (synchronous reset, as
// RESETMODE="SYNC"). Only CLK0/CE0/RST0 are modelled; P = A * B, each operand signed when its
// SIGNEDx is 1. Cascade ports (SRI*, SRO*, RO*), C and HIGHSPEED_CLK (the only mode in which
// CLKn_DIV matters) are not modelled; the test checks the instance uses none of them.
module MULT18X18D(A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
    B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
    C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
    SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK0, CE0, RST0,
    P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    input A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0;
    input B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0;
    input C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0;
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK0, CE0, RST0;
    output P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0;

    wire [17:0] a_in = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b_in = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};

    reg [17:0] a_reg = 0, b_reg = 0;
    reg signeda_reg = 0, signedb_reg = 0;
    always @(posedge CLK0) begin
        if (RST0) begin
            a_reg <= 0; signeda_reg <= 0;
        end else if (CE0) begin
            a_reg <= a_in; signeda_reg <= SIGNEDA;
        end
    end
    always @(posedge CLK0) begin
        if (RST0) begin
            b_reg <= 0; signedb_reg <= 0;
        end else if (CE0) begin
            b_reg <= b_in; signedb_reg <= SIGNEDB;
        end
    end

    wire a_registered = REG_INPUTA_CLK == "CLK0";
    wire b_registered = REG_INPUTB_CLK == "CLK0";
    wire [17:0] a = a_registered ? a_reg : a_in;
    wire [17:0] b = b_registered ? b_reg : b_in;
    wire a_signed = a_registered ? signeda_reg : SIGNEDA;
    wire b_signed = b_registered ? signedb_reg : SIGNEDB;
    wire [35:0] a_wide = {{18{a_signed & a[17]}}, a};
    wire [35:0] b_wide = {{18{b_signed & b[17]}}, b};
    wire [35:0] product = a_wide * b_wide;

    reg [35:0] pipeline_reg = 0;
    always @(posedge CLK0)
        if (RST0) pipeline_reg <= 0;
        else if (CE0) pipeline_reg <= product;
    wire [35:0] pipelined = REG_PIPELINE_CLK == "CLK0" ? pipeline_reg : product;

    reg [35:0] output_reg = 0;
    always @(posedge CLK0)
        if (RST0) output_reg <= 0;
        else if (CE0) output_reg <= pipelined;
    wire [35:0] p = REG_OUTPUT_CLK == "CLK0" ? output_reg : pipelined;

    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p;
endmodule
