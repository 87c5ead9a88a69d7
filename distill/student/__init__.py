"""Students: small models scoring by <user vector, item vector>, so serving is one FAISS search.

config.py (StudentConfig), build.py (build_student, n_params), sequential.py (SASRec), two_tower.py,
content.py (the content path), fit.py (training), stage.py (every report arm as a job),
warm_start.py (the nightly student from the published one)."""
