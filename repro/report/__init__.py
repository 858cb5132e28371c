"""Results side of the suite: the paper's numbers, claim checks, rendered tables.

    paper.paper_table(N)             the paper's Table N as a DataFrame
    claims.evaluate_claims(N, ours)  each claim of Table N: held / not held / not evaluable
    render.render_table(N, ours, provenance, out_dir)   tableN.{md,tex,csv,json}
    render.render_index(out_dir, tables)                tables/README.md
    provenance.make_provenance(...), provenance.git_commit()
"""
