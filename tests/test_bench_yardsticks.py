"""The benchmarks' yardsticks: the purchase's RSA operation counts, the bare-RSA floor made of
exactly those operations, and the machine line printed above every benchmark."""
from setmail.bench import machine
from setmail.bench.crypto_purchase import bare_rsa, crypto_only


def test_crypto_only_counts_each_rsa_operation_and_the_floor_repeats_them():
    crypto = crypto_only(seconds=0.05)
    ops = crypto["ops"]
    assert ops["sign"] + ops["oaep_decrypt"] == crypto["private_ops"] == 23
    assert ops["verify"] + ops["oaep_encrypt"] == crypto["public_ops"] == 24
    floor = bare_rsa(ops, seconds=0.05)
    assert floor["n"] >= 1 and floor["cpu_per"] > 0
    nothing = bare_rsa({}, seconds=0.01)
    assert nothing["cpu_per"] < floor["cpu_per"]


def test_machine_line_names_the_cpu_the_cores_and_the_load():
    box = machine.describe()
    assert box["cores"] >= 1 and box["cpu"]
    text = machine.line(box)
    assert f"{box['cores']} cores" in text and ("idle" in text or "LOADED" in text)
    assert "LOADED" in machine.line({**box, "load_before": 9.0, "idle": False})
