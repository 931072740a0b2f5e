;;; Big hash tables: hundreds of thousands of entries with string and
;;; integer keys, collected in between, then every entry checked.
(define size 300000)

(define by-number (make-hash-table))
(do ((i 0 (+ i 1))) ((= i size))
  (hashv-set! by-number i (* i 3)))
(gc)

(define by-string (make-hash-table))
(do ((i 0 (+ i 1))) ((= i size))
  (hash-set! by-string (number->string i 16) (cons i (number->string i))))
(gc)

(define (check table lookup key-of expect)
  (let loop ((i 0) (bad 0))
    (if (= i size)
        bad
        (loop (+ i 1) (if (equal? (lookup table (key-of i)) (expect i)) bad (+ bad 1))))))

(format #t "numbers: ~a entries, ~a wrong~%" (hash-count (const #t) by-number)
        (check by-number hashv-ref identity (lambda (i) (* i 3))))
(format #t "strings: ~a entries, ~a wrong~%" (hash-count (const #t) by-string)
        (check by-string hash-ref (lambda (i) (number->string i 16))
               (lambda (i) (cons i (number->string i)))))

;; Remove every other entry, collect, check what is left.
(do ((i 0 (+ i 2))) ((>= i size))
  (hash-remove! by-string (number->string i 16)))
(gc)
(format #t "after removal: ~a entries, sum of kept keys ~a~%"
        (hash-count (const #t) by-string)
        (hash-fold (lambda (k v sum) (+ sum (car v))) 0 by-string))
