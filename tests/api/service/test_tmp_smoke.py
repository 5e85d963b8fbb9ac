import requests
def test_smoke(tap_server):
    u = tap_server.url
    r = requests.get(u + "/tap/sync", params={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "SELECT spectrum_id, survey, ra, dec FROM catalog.spectra", "RESPONSEFORMAT": "csv"})
    print(r.status_code, r.headers.get("content-type"), r.text[:2000])
    r = requests.get(u + "/tap/tables"); print(r.status_code, r.text[:500])
    r = requests.get(u + "/tap/capabilities"); print(r.status_code, r.text[:300])
    r = requests.get(u + "/tap/availability"); print(r.status_code, r.text[:300])
    r = requests.get(u + "/scs", params={"RA": 150.0, "DEC": 1.0, "SR": 1}); print(r.status_code, r.text[:1500])
