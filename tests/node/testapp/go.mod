module tm-node/testapp

go 1.24
