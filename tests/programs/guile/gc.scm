;;; Explicit (gc) calls between and during allocation, guardians and weak
;;; references; only deterministic facts are printed (what survives a
;;; collection because it is referenced). `(gc) (display 2)` failed with an
;;; older shim.
(gc)
(display 2)
(newline)

(define kept (make-vector 1000))
(do ((round 0 (+ round 1))) ((= round 50))
  (do ((i 0 (+ i 1))) ((= i 1000))
    (vector-set! kept i (make-string 100 (integer->char (+ 65 (modulo (+ i round) 26))))))
  ;; Garbage that only a collection can take back.
  (make-list 10000 round)
  (gc))
(format #t "kept strings: ~a chars, first ~a~%"
        (let loop ((i 0) (sum 0))
          (if (= i 1000) sum (loop (+ i 1) (+ sum (string-length (vector-ref kept i))))))
        (string-ref (vector-ref kept 0) 0))

;; A guardian returns an object only once it is unreachable; a reachable
;; one must never come back.
(define guardian (make-guardian))
(define held (list 'held 1 2 3))
(guardian held)
(do ((i 0 (+ i 1))) ((= i 5)) (gc))
(format #t "reachable object returned by guardian: ~a~%" (guardian))
(format #t "held still intact: ~a~%" held)

;; A weak-key table keeps an entry whose key is still referenced.
(define weak (make-weak-key-hash-table))
(define keys (map (lambda (i) (list 'key i)) (iota 1000)))
(for-each (lambda (k) (hash-set! weak k (cadr k))) keys)
(gc) (gc)
(format #t "referenced weak keys found: ~a~%"
        (length (filter (lambda (k) (hash-ref weak k)) keys)))
(format #t "gc-stats has heap-size: ~a~%" (and (assq 'heap-size (gc-stats)) #t))
