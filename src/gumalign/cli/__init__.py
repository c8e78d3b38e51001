"""The command-line interface: one module per subcommand, each thin (parse, validate, call the core, report).

Heavy imports (torch, scipy, matplotlib) happen inside command bodies so that ``gumalign --help`` stays instant.
"""
