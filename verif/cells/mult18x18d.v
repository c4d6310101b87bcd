// Simulation model of the Lattice ECP5 sysDSP 18x18 multiplier, MULT18X18D.
//
// Written for this project from the ECP5 and ECP5-5G sysDSP Usage Guide (Lattice TN1267):
// yosys ships only a black box for this cell (share/ecp5/cells_bb.v); cells_sim.v has none.
// The port and parameter names are those of the primitive (and of yosys's black box), so the
// same model serves the Amaranth-emitted RTL (gen/hw/multiplier.py instantiates the cell) and
// yosys `synth_ecp5` netlists.
//
// Datapath (TN1267, "MULT18X18D"):
//   A side: A or SRIA (SOURCEA = 1) -> input register A (with SIGNEDA) -> ROA, SROA
//   B side: B or SRIB (SOURCEB = 1, SOURCEB_MODE "B_SHIFT") -> input register B (with SIGNEDB)
//           -> ROB, SROB
//   C side: C -> input register C -> ROC (C is not multiplied; it feeds the ALU54B)
//   product: A x B, 36 bits; each operand is two's complement when its (registered) SIGNEDx is
//           high, unsigned otherwise -> pipeline register -> output register -> P
//   SIGNEDP = SIGNEDA | SIGNEDB after the pipeline stage.
// Each register is present when its REG_*_CLK names a clock (CLK0..CLK3) and bypassed when it
// is "NONE"; REG_*_CE picks its clock enable (CE0..CE3) and REG_*_RST its reset (RST0..RST3).
// A reset clears the register whatever its clock enable says (RESETMODE "SYNC": at the clock
// edge; "ASYNC": at once). All registers are zero after configuration (GSR / power-up); the
// global set/reset net itself is not modelled, so GSR "ENABLED" and "DISABLED" simulate alike.
//
// Not modelled (the simulation stops if an instance asks for them): MULT_BYPASS "ENABLED",
// SOURCEB_MODE other than "B_SHIFT", HIGHSPEED_CLK, CAS_MATCH_REG "TRUE". CLKn_DIV only
// concerns the high-speed (HIGHSPEED_CLK) mode and is ignored.
`timescale 1ns / 1ps

module MULT18X18D__stage #(
    parameter integer WIDTH = 1,
    parameter CLK = "NONE",
    parameter CE = "CE0",
    parameter RST = "RST0",
    parameter RESETMODE = "SYNC"
) (
    input  [3:0] clks, ces, rsts,
    input  [WIDTH-1:0] d,
    output [WIDTH-1:0] q
);
    generate
        if (CLK == "NONE") begin : bypass
            assign q = d;
        end else begin : registered
            localparam integer CLK_I = CLK == "CLK0" ? 0 : CLK == "CLK1" ? 1 : CLK == "CLK2" ? 2 : 3;
            localparam integer CE_I = CE == "CE0" ? 0 : CE == "CE1" ? 1 : CE == "CE2" ? 2 : 3;
            localparam integer RST_I = RST == "RST0" ? 0 : RST == "RST1" ? 1 : RST == "RST2" ? 2 : 3;
            wire clk = clks[CLK_I];
            wire ce = ces[CE_I];
            wire rst = rsts[RST_I];
            reg [WIDTH-1:0] r = {WIDTH{1'b0}};
            if (RESETMODE == "ASYNC") begin : async_reset
                always @(posedge clk or posedge rst)
                    if (rst) r <= {WIDTH{1'b0}};
                    else if (ce) r <= d;
            end else begin : sync_reset
                always @(posedge clk)
                    if (rst) r <= {WIDTH{1'b0}};
                    else if (ce) r <= d;
            end
            assign q = r;
        end
    endgenerate

    initial begin
        if (CLK != "NONE" && CLK != "CLK0" && CLK != "CLK1" && CLK != "CLK2" && CLK != "CLK3")
            $fatal(1, "MULT18X18D %m: clock selection %0s is none of NONE, CLK0..CLK3", CLK);
        if (CE != "CE0" && CE != "CE1" && CE != "CE2" && CE != "CE3")
            $fatal(1, "MULT18X18D %m: clock enable selection %0s is none of CE0..CE3", CE);
        if (RST != "RST0" && RST != "RST1" && RST != "RST2" && RST != "RST3")
            $fatal(1, "MULT18X18D %m: reset selection %0s is none of RST0..RST3", RST);
        if (RESETMODE != "SYNC" && RESETMODE != "ASYNC")
            $fatal(1, "MULT18X18D %m: RESETMODE %0s is neither SYNC nor ASYNC", RESETMODE);
    end
endmodule

module MULT18X18D (
    input  A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
    input  B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
    input  C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
    input  SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input  CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0,
    input  SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9, SRIA8, SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0,
    input  SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9, SRIB8, SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0,
    output SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9, SROA8, SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0,
    output SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9, SROB8, SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0,
    output ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9, ROA8, ROA7, ROA6, ROA5, ROA4, ROA3, ROA2, ROA1, ROA0,
    output ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9, ROB8, ROB7, ROB6, ROB5, ROB4, ROB3, ROB2, ROB1, ROB0,
    output ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9, ROC8, ROC7, ROC6, ROC5, ROC4, ROC3, ROC2, ROC1, ROC0,
    output P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0,
    output SIGNEDP
);
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

    wire [3:0] clks = {CLK3, CLK2, CLK1, CLK0};
    wire [3:0] ces = {CE3, CE2, CE1, CE0};
    wire [3:0] rsts = {RST3, RST2, RST1, RST0};

    wire [17:0] a_in = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b_in = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    wire [17:0] c_in = {C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0};
    wire [17:0] sria_in = {SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9, SRIA8, SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0};
    wire [17:0] srib_in = {SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9, SRIB8, SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0};

    // Input registers; the sign control travels with its operand.
    wire [17:0] a_q, b_q, c_q;
    wire signeda_q, signedb_q;
    MULT18X18D__stage #(.WIDTH(19), .CLK(REG_INPUTA_CLK), .CE(REG_INPUTA_CE),
                        .RST(REG_INPUTA_RST), .RESETMODE(RESETMODE)) input_a (
        .clks(clks), .ces(ces), .rsts(rsts),
        .d({SIGNEDA, SOURCEA ? sria_in : a_in}), .q({signeda_q, a_q}));
    MULT18X18D__stage #(.WIDTH(19), .CLK(REG_INPUTB_CLK), .CE(REG_INPUTB_CE),
                        .RST(REG_INPUTB_RST), .RESETMODE(RESETMODE)) input_b (
        .clks(clks), .ces(ces), .rsts(rsts),
        .d({SIGNEDB, SOURCEB ? srib_in : b_in}), .q({signedb_q, b_q}));
    MULT18X18D__stage #(.WIDTH(18), .CLK(REG_INPUTC_CLK), .CE(REG_INPUTC_CE),
                        .RST(REG_INPUTC_RST), .RESETMODE(RESETMODE)) input_c (
        .clks(clks), .ces(ces), .rsts(rsts), .d(c_in), .q(c_q));

    // The multiplier: each operand extended by one bit, by its sign when it is signed.
    wire signed [18:0] a_ext = {signeda_q & a_q[17], a_q};
    wire signed [18:0] b_ext = {signedb_q & b_q[17], b_q};
    wire signed [37:0] product = a_ext * b_ext;

    wire [35:0] p_pipe;
    wire signedp_pipe;
    MULT18X18D__stage #(.WIDTH(37), .CLK(REG_PIPELINE_CLK), .CE(REG_PIPELINE_CE),
                        .RST(REG_PIPELINE_RST), .RESETMODE(RESETMODE)) pipeline (
        .clks(clks), .ces(ces), .rsts(rsts),
        .d({signeda_q | signedb_q, product[35:0]}), .q({signedp_pipe, p_pipe}));
    wire [35:0] p_out;
    MULT18X18D__stage #(.WIDTH(36), .CLK(REG_OUTPUT_CLK), .CE(REG_OUTPUT_CE),
                        .RST(REG_OUTPUT_RST), .RESETMODE(RESETMODE)) out (
        .clks(clks), .ces(ces), .rsts(rsts), .d(p_pipe), .q(p_out));

    assign {SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9, SROA8, SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0} = a_q;
    assign {SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9, SROB8, SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0} = b_q;
    assign {ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9, ROA8, ROA7, ROA6, ROA5, ROA4, ROA3, ROA2, ROA1, ROA0} = a_q;
    assign {ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9, ROB8, ROB7, ROB6, ROB5, ROB4, ROB3, ROB2, ROB1, ROB0} = b_q;
    assign {ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9, ROC8, ROC7, ROC6, ROC5, ROC4, ROC3, ROC2, ROC1, ROC0} = c_q;
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p_out;
    assign SIGNEDP = signedp_pipe;

    initial begin
        if (MULT_BYPASS != "DISABLED")
            $fatal(1, "MULT18X18D %m: MULT_BYPASS %0s is not modelled", MULT_BYPASS);
        if (SOURCEB_MODE != "B_SHIFT")
            $fatal(1, "MULT18X18D %m: SOURCEB_MODE %0s is not modelled", SOURCEB_MODE);
        if (HIGHSPEED_CLK != "NONE")
            $fatal(1, "MULT18X18D %m: HIGHSPEED_CLK %0s is not modelled", HIGHSPEED_CLK);
        if (CAS_MATCH_REG != "FALSE")
            $fatal(1, "MULT18X18D %m: CAS_MATCH_REG %0s is not modelled", CAS_MATCH_REG);
    end
endmodule
