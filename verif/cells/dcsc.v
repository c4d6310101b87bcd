// Simulation model of the Lattice ECP5 dynamic clock select, DCSC (two clocks in, one out).
//
// Written for this project from the dynamic clock select's behaviour as the ECP5 sysCLOCK
// PLL/DLL Design and Usage Guide (Lattice TN1263) describes it and as Lattice's ECP5
// simulation library models it (read, not copied). yosys's ECP5 cells_bb.v declares DCSC only
// as a black box (ports CLK1, CLK0, SEL1, SEL0, MODESEL, DCSOUT; parameter DCSMODE, default
// "POS"), so a design that instantiates one (gen/hw/clock_select.py) cannot be simulated
// without a model. No setup time on SEL and no metastability are modelled.
//
// MODESEL 1: a plain multiplexer, which may glitch: SEL {SEL1, SEL0} 01 gives CLK0, 10 CLK1,
//   anything else low.
// MODESEL 0, DCSMODE "POS" (glitch-free, output held high during a switch): SEL0 enables CLK0
//   and SEL1 enables CLK1. Each input's enable flop takes its SEL bit on that input's rising
//   edge, and is held cleared while the other input's enable is set, so at most one input is
//   enabled and a new one only after the old one has let go. The output is the AND of the
//   inputs, each forced high while not enabled: an enable changes only on its own clock's
//   rising edge, when the output is high either way, so no edge appears out of turn. With
//   neither input enabled, or SEL 11, the output holds high.
// MODESEL 0, DCSMODE "NEG": the same on falling edges, the output held low (OR of the inputs,
//   each forced low while not enabled).
// DCSMODE "CLK0", "CLK1", "LOW", "HIGH": a static buffer of CLK0, CLK1, 0 or 1.
// DCSMODE "CLK0_LOW", "CLK0_HIGH", "CLK1_LOW", "CLK1_HIGH" (one input gated, the other
//   passed) are not modelled: elaboration stops with an error.

`timescale 1ns / 1ps

module DCSC (CLK1, CLK0, SEL1, SEL0, MODESEL, DCSOUT);
    parameter DCSMODE = "POS";
    input CLK1;
    input CLK0;
    input SEL1;
    input SEL0;
    input MODESEL;
    output DCSOUT;

    localparam NEG = DCSMODE == "NEG";
    localparam SWITCHING = DCSMODE == "POS" || DCSMODE == "NEG";
    localparam STATIC = DCSMODE == "CLK0" || DCSMODE == "CLK1" || DCSMODE == "LOW" ||
                        DCSMODE == "HIGH";

    initial begin
        if (!SWITCHING && !STATIC) begin
            $display("DCSC: DCSMODE %s is not modelled (verif/cells/dcsc.v)", DCSMODE);
            $finish;
        end
    end

    // Every edge below is a rising one: NEG inverts the inputs (and the result).
    wire clk0_edge = NEG ? ~CLK0 : CLK0;
    wire clk1_edge = NEG ? ~CLK1 : CLK1;
    reg enable0 = 1'b0;
    reg enable1 = 1'b0;

    always @(posedge clk0_edge or posedge enable1)
        if (enable1)
            enable0 <= 1'b0;
        else
            enable0 <= SEL0;

    always @(posedge clk1_edge or posedge enable0)
        if (enable0)
            enable1 <= 1'b0;
        else
            enable1 <= SEL1;

    // Held high (NEG: low) unless enabled; the switched output combines the two.
    wire gated0 = ~enable0 | clk0_edge;
    wire gated1 = ~enable1 | clk1_edge;
    wire held = (SEL0 & SEL1) ? 1'b1 : (gated0 & gated1);
    wire switched = NEG ? ~held : held;

    wire mux = (SEL0 & ~SEL1) ? CLK0 : (SEL1 & ~SEL0) ? CLK1 : 1'b0;
    wire fixed = DCSMODE == "CLK0" ? CLK0 : DCSMODE == "CLK1" ? CLK1 :
                 DCSMODE == "HIGH" ? 1'b1 : 1'b0;

    assign DCSOUT = MODESEL ? mux : STATIC ? fixed : switched;
endmodule
